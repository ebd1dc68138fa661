"""Provider health figures (latency percentiles)."""

from __future__ import annotations

import pytest

from adp_router.health import ProviderHealth


def test_health_percentiles() -> None:
    h = ProviderHealth(window_s=10)
    for i in range(1, 101):
        h.record(1000.0, True, float(i))
    h.record(1000.0, False, 5000.0)
    snap = h.snapshot(1005.0)
    assert snap.requests == 101 and snap.latency_p50_ms == 50 and snap.latency_p95_ms == 95
    assert snap.success_rate == pytest.approx(100 / 101, abs=1e-4)
    assert h.snapshot(2000.0).requests == 0
