"""Small pure helpers: percentiles, summaries, a lean SSE block splitter."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))
    return s[k]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 0.50),
        "p95": pct(values, 0.95),
        "p99": pct(values, 0.99),
        "max": max(values) if values else None,
    }


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def flatten(xs: Iterable[list[float]]) -> list[float]:
    return [x for chunk in xs for x in chunk]


def gateway_rest_latencies(log_files: Iterable[Any], since: float, until: float) -> dict[str, list[float]]:
    """Server-side REST latencies from the gateways' JSON access logs (`latency_ms`, as the gateway measured
    it, without the client's own delays), per `METHOD route`, for requests that ended in [since, until]
    (epoch seconds). SSE streams, health and admin calls are left out."""
    import json
    from datetime import datetime

    out: dict[str, list[float]] = {}
    for path in log_files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if '"latency_ms"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                    when = datetime.fromisoformat(rec["time"]).timestamp()
                except (ValueError, KeyError, TypeError):
                    continue
                route = str(rec.get("route") or rec.get("path") or "")
                if not since <= when <= until or not route.startswith("/api/discussions") or route.endswith("/events"):
                    continue
                out.setdefault(f"{rec.get('method')} {route}", []).append(float(rec["latency_ms"]))
    return out


LAG_METRIC = "adp_event_loop_lag_seconds_bucket"


def lag_buckets(metrics_text: str) -> dict[float, float]:
    """The cumulative buckets (upper bound in s -> count) of a service's event-loop lag histogram, from its
    Prometheus text exposition."""
    out: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith(LAG_METRIC + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        out[math.inf if le == "+Inf" else float(le)] = float(value)
    return out


def gauge_value(metrics_text: str, name: str) -> float | None:
    """The value of an unlabelled gauge in a Prometheus text exposition (None when absent)."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    return None


def lag_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound (ms) of the bucket holding the q-quantile of the lag samples taken between two snapshots
    (inf when it is past the last bound); None without samples."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for b, c in zip(bounds, counts, strict=True):
        if c >= q * total:
            return b * 1000
    return math.inf
