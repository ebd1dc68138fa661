"""Request statistics windows."""

from __future__ import annotations

from adp_gateway.observability import StatsWindow


def test_stats_window() -> None:
    w = StatsWindow(sample_size=10)
    for i in range(100):
        w.add(500 if i % 10 == 0 else (404 if i % 10 == 1 else 200), float(i))
    s = w.to_stats("gateway", "g1")
    assert (s.requests, s.errors, s.client_errors) == (100, 10, 10)
    assert len(s.latencies_ms) == 10 and s.latency_p95_ms is not None
    # an event stream counts as a request (and its status) but its duration is not a latency
    w = StatsWindow(sample_size=10)
    w.add(200, 3.0)
    w.add(200, None)
    w.add(500, None)
    s = w.to_stats("gateway", "g1")
    assert (s.requests, s.errors, s.latencies_ms, s.latency_p95_ms) == (3, 1, [3.0], 3.0)
