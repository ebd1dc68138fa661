"""Chunk pacing: the flush interval grows with load and event-loop lag, up to its cap."""

from __future__ import annotations

import pytest

from adp_router.pacing import chunk_interval_s


def test_chunk_interval_grows_with_the_square_of_the_load_up_to_the_cap() -> None:
    assert chunk_interval_s(1, 5, 500, 25) == pytest.approx(0.005)
    assert chunk_interval_s(25, 5, 500, 25) == pytest.approx(0.005)
    assert chunk_interval_s(50, 5, 500, 25) == pytest.approx(0.020)
    assert chunk_interval_s(100, 5, 500, 25) == pytest.approx(0.080)
    assert chunk_interval_s(250, 5, 500, 25) == pytest.approx(0.500)
    assert chunk_interval_s(5000, 5, 500, 25) == pytest.approx(0.500)


def test_the_chunk_messages_a_copy_sends_peak_at_the_busy_mark_and_fall_beyond() -> None:
    """Messages per second at one token per stream and tick: streams ÷ interval."""
    rate = {n: n / chunk_interval_s(n, 5, 500, 25) for n in (10, 25, 50, 100, 250, 1000)}
    assert max(rate, key=rate.__getitem__) == 25
    assert rate[25] > rate[50] > rate[100] > rate[250]
    assert rate[1000] == pytest.approx(2000)  # at the cap the count grows again, one message per stream and cap
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
