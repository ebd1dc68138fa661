"""Chunk pacing: the flush interval grows with load and event-loop lag, up to its cap."""

from __future__ import annotations

import pytest

from adp_router.pacing import chunk_interval_s


def test_chunk_interval_grows_with_load_up_to_the_cap() -> None:
    assert chunk_interval_s(1, 20, 100, 50) == pytest.approx(0.020)
    assert chunk_interval_s(50, 20, 100, 50) == pytest.approx(0.020)
    assert chunk_interval_s(100, 20, 100, 50) == pytest.approx(0.040)
    assert chunk_interval_s(250, 20, 100, 50) == pytest.approx(0.100)
    assert chunk_interval_s(5000, 20, 100, 50) == pytest.approx(0.100)
    assert chunk_interval_s(500, 20, 0, 50) == pytest.approx(0.020)  # no growth configured
    assert chunk_interval_s(500, 0, 0, 50) == 0.0  # every token its own chunk


def test_chunk_interval_grows_with_the_event_loop_lag_when_cpu_runs_short() -> None:
    # (streams, base, max, busy streams, lag ms, overload lag ms, overload max ms)
    assert chunk_interval_s(500, 20, 500, 20, 4.0, 5.0, 1000) == pytest.approx(0.500)  # lag below the mark
    assert chunk_interval_s(500, 20, 500, 20, 7.5, 5.0, 1000) == pytest.approx(0.750)  # in proportion
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 5.0, 1000) == pytest.approx(1.000)  # capped
    assert chunk_interval_s(1, 20, 500, 20, 10.0, 5.0, 1000) == pytest.approx(0.040)  # few streams, busy machine
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 0.0, 1000) == pytest.approx(0.500)  # off
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 5.0, 300) == pytest.approx(0.500)  # never below the load's
    assert chunk_interval_s(500, 0, 0, 20, 50.0, 5.0, 1000) == 0.0  # every token its own chunk stays so
