"""Prometheus metrics of the router (registered on the service's own registry)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw: dict[str, Any] = {"registry": registry}
        self.requests = Counter(
            "adp_router_requests_total", "Completion requests by outcome", ["provider", "model", "status"], **kw
        )
        self.errors = Counter(
            "adp_router_errors_total",
            "Failed provider attempts and failed requests",
            ["provider", "model", "code"],
            **kw,
        )
        self.attempts = Counter("adp_router_attempts_total", "Provider attempts", ["provider", "outcome"], **kw)
        self.fallbacks = Counter("adp_router_fallbacks_total", "Falls to the next chain entry", ["provider"], **kw)
        self.latency = Histogram(
            "adp_router_request_latency_seconds",
            "Whole-call latency",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.ttft = Histogram(
            "adp_router_ttft_seconds",
            "Time to first token (streamed calls)",
            ["provider", "model"],
            buckets=TTFT_BUCKETS,
            **kw,
        )
        self.breaker = Gauge("adp_router_breaker_state", "0 closed, 1 half_open, 2 open", ["provider"], **kw)
        self.inflight = Gauge("adp_router_inflight_requests", "Requests being served", **kw)
        self.chunk_interval = Gauge(
            "adp_router_chunk_interval_seconds",
            "Current chunk coalescing interval (grows with the streams in flight and with event-loop lag)",
            **kw,
        )
        self.budget_rejections = Counter("adp_router_budget_rejections_total", "Requests refused by budget", **kw)
        self.cancelled = Counter(
            "adp_router_cancelled_total", "In-flight calls cancelled by their discussion (e.g. stopped)", **kw
        )
        self.replays = Counter(
            "adp_router_replays_total",
            "Logical calls answered without calling a provider: a stored result replayed, or a running call joined",
            ["how"],
            **kw,
        )
        self.orphaned = Counter(
            "adp_router_orphaned_total", "Streamed calls cancelled because their caller was gone", **kw
        )
