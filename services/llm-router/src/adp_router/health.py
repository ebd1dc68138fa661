"""Rolling provider health (pure): success rate and latency percentiles over a time window."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class HealthSnapshot:
    requests: int
    success_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class ProviderHealth:
    window_s: float = 300.0
    max_samples: int = 2000
    samples: deque[tuple[float, bool, float]] = field(default_factory=deque)

    def record(self, now: float, ok: bool, latency_ms: float) -> None:
        self.samples.append((now, ok, latency_ms))
        if len(self.samples) > self.max_samples:
            self.samples.popleft()

    def snapshot(self, now: float) -> HealthSnapshot:
        while self.samples and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        n = len(self.samples)
        if n == 0:
            return HealthSnapshot(0, None, None, None)
        oks = sum(1 for _, ok, _ in self.samples if ok)
        lat = sorted(ms for _, ok, ms in self.samples if ok)
        return HealthSnapshot(
            requests=n,
            success_rate=round(oks / n, 4),
            latency_p50_ms=percentile(lat, 0.5),
            latency_p95_ms=percentile(lat, 0.95),
        )


class HealthBoard:
    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self.providers: dict[str, ProviderHealth] = {}

    def record(self, provider: str, now: float, ok: bool, latency_ms: float) -> None:
        h = self.providers.get(provider)
        if h is None:
            h = self.providers[provider] = ProviderHealth(self.window_s)
        h.record(now, ok, latency_ms)

    def snapshot(self, provider: str, now: float) -> HealthSnapshot:
        h = self.providers.get(provider)
        return h.snapshot(now) if h else HealthSnapshot(0, None, None, None)
