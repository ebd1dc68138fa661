"""What the facts say, kept for the rule evaluators (pure logic, no I/O): sliding windows of request stats
and router call outcomes, the latest breaker / provider-health / budget state, and the latest heartbeat of
every service copy. Times come from the facts themselves, so a replay of the stream after a restart
rebuilds the same state."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adp_common.schemas.llm import BreakerStateName, UsageRecord
from adp_common.schemas.ops import BreakerChange, BudgetEvent, Heartbeat, ProviderHealthEvent, RequestStats


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _StatsWindow:
    end: datetime
    requests: int
    errors: int
    latencies: list[float]
    p95: float | None


@dataclass
class Beat:
    time: datetime
    memory_pressure: float
    disk_free_ratio: float


@dataclass
class _Budget:
    day: str
    kind: str
    percentage: float
    spent: str
    limit: str


@dataclass
class _Health:
    time: datetime
    available: bool
    success_rate: float | None
    requests: int


class Observations:
    """What the facts say, bounded in time by `retention` (the longest rule window)."""

    def __init__(
        self, retention: timedelta = timedelta(minutes=5), forget_after: timedelta = timedelta(days=1)
    ) -> None:
        self.retention = retention
        self.forget_after = forget_after
        # service -> (instance, window_start) -> window
        self.stats: dict[str, dict[tuple[str, datetime], _StatsWindow]] = {}
        # provider -> deque of (time, ok)
        self.calls: dict[str, deque[tuple[datetime, bool]]] = {}
        self.breakers: dict[str, tuple[datetime, BreakerStateName]] = {}
        self.health: dict[str, _Health] = {}
        self.budgets: dict[str, _Budget] = {}
        # service -> instance -> latest beat
        self.beats: dict[str, dict[str, Beat]] = {}

    # ---- feeding --------------------------------------------------------------------------------
    def observe_request_stats(self, ev: RequestStats) -> None:
        start = _aware(ev.window_start)
        self.stats.setdefault(ev.service, {})[(ev.instance, start)] = _StatsWindow(
            end=start + timedelta(seconds=ev.window_s),
            requests=ev.requests,
            errors=ev.errors,
            latencies=list(ev.latencies_ms),
            p95=ev.latency_p95_ms,
        )

    def observe_usage(self, ev: UsageRecord) -> None:
        self.calls.setdefault(ev.provider, deque()).append((_aware(ev.time), ev.status == "ok"))

    def observe_breaker(self, ev: BreakerChange) -> None:
        t = _aware(ev.time)
        cur = self.breakers.get(ev.provider)
        if cur is None or t >= cur[0]:
            self.breakers[ev.provider] = (t, ev.state)

    def observe_provider_health(self, ev: ProviderHealthEvent) -> None:
        t = _aware(ev.time)
        cur = self.health.get(ev.provider)
        if cur is None or t >= cur.time:
            self.health[ev.provider] = _Health(t, ev.available, ev.success_rate, ev.requests)

    def observe_budget(self, ev: BudgetEvent) -> None:
        cur = self.budgets.get(ev.scope)
        if cur is not None and cur.day > ev.day:
            return  # an older day's event arriving late
        self.budgets[ev.scope] = _Budget(ev.day, ev.kind, ev.percentage, ev.spent_usd, ev.limit_usd)

    def observe_heartbeat(self, ev: Heartbeat) -> None:
        t = _aware(ev.time)
        per = self.beats.setdefault(ev.service, {})
        cur = per.get(ev.instance)
        if cur is None or t >= cur.time:
            per[ev.instance] = Beat(t, ev.memory_pressure, ev.disk_free_ratio)

    def observe(self, payload: Any) -> bool:
        """Dispatch any known fact; returns False for payloads the engine does not use."""
        if isinstance(payload, RequestStats):
            self.observe_request_stats(payload)
        elif isinstance(payload, UsageRecord):
            self.observe_usage(payload)
        elif isinstance(payload, BreakerChange):
            self.observe_breaker(payload)
        elif isinstance(payload, ProviderHealthEvent):
            self.observe_provider_health(payload)
        elif isinstance(payload, BudgetEvent):
            self.observe_budget(payload)
        elif isinstance(payload, Heartbeat):
            self.observe_heartbeat(payload)
        else:
            return False
        return True

    def prune(self, now: datetime) -> None:
        """Forget windowed data older than the retention (latest-state facts are kept)."""
        horizon = now - self.retention
        for service, windows in self.stats.items():
            self.stats[service] = {k: w for k, w in windows.items() if w.end > horizon}
        for calls in self.calls.values():
            while calls and calls[0][0] <= horizon:
                calls.popleft()
        # copies silent for a day are forgotten (restarts create new instance ids); a firing
        # heartbeat alert for their service stays firing (see evaluate_rule)
        forget = now - self.forget_after
        for service in list(self.beats):
            per = {i: b for i, b in self.beats[service].items() if b.time > forget}
            if per:
                self.beats[service] = per
            else:
                del self.beats[service]

    # ---- queries --------------------------------------------------------------------------------
    def request_window(self, service: str, now: datetime, window: timedelta) -> tuple[int, int, list[float], float]:
        """(requests, errors, pooled latency samples, requests-weighted mean of reported p95s)."""
        horizon = now - window
        requests = errors = 0
        samples: list[float] = []
        p95_weighted = 0.0
        p95_weight = 0
        for w in self.stats.get(service, {}).values():
            if w.end <= horizon or w.end > now + timedelta(seconds=5):
                continue
            requests += w.requests
            errors += w.errors
            samples.extend(w.latencies)
            if w.p95 is not None and w.requests > 0:
                p95_weighted += w.p95 * w.requests
                p95_weight += w.requests
        return requests, errors, samples, (p95_weighted / p95_weight if p95_weight else math.nan)

    def call_window(self, provider: str, now: datetime, window: timedelta) -> tuple[int, int]:
        """(calls, successful calls) of a provider in the window."""
        horizon = now - window
        calls = ok = 0
        for t, success in self.calls.get(provider, ()):
            if t > horizon:
                calls += 1
                ok += success
        return calls, ok
