"""Measure the pure rule engine: facts observed per second and the cost of one evaluation tick.

Scale: 10 gateway copies publishing request stats every 5 s with 100 latency samples each, 40 service copies
heartbeating every 10 s, 6 providers with 20 calls/s, over a 5-minute window (what one tick looks at).
Run: .venv/bin/python services/alerts/scripts/bench_engine.py
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from adp_alerts.engine import Engine
from adp_alerts.rules import default_rules
from adp_common.schemas.llm import UsageRecord
from adp_common.schemas.ops import Heartbeat, RequestStats


def main() -> None:
    rnd = random.Random(1)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    facts: list[object] = []
    for s in range(0, 300, 5):
        for g in range(10):
            facts.append(
                RequestStats(
                    service="gateway",
                    instance=f"g{g}",
                    window_start=t0 + timedelta(seconds=s),
                    window_s=5,
                    requests=200,
                    errors=rnd.randint(0, 5),
                    latencies_ms=[rnd.uniform(10, 900) for _ in range(100)],
                )
            )
    for s in range(0, 300, 10):
        for c in range(40):
            facts.append(Heartbeat(service=f"svc{c % 5}", instance=f"i{c}", time=t0 + timedelta(seconds=s)))
    for i in range(300 * 20 * 6 // 6):
        facts.append(
            UsageRecord(request_id=str(i), provider=f"p{i % 6}", model="m", time=t0 + timedelta(seconds=i / 20 / 6 * 6))
        )
    engine = Engine(default_rules(), started_at=t0)
    start = time.perf_counter()
    for f in facts:
        engine.observe(f)
    observe_s = time.perf_counter() - start
    now = t0 + timedelta(seconds=300)
    ticks = 50
    start = time.perf_counter()
    for i in range(ticks):
        engine.tick(now + timedelta(milliseconds=i), [])
    tick_ms = (time.perf_counter() - start) / ticks * 1000
    print(f"facts: {len(facts)}; observe: {len(facts) / observe_s:,.0f} facts/s; one tick: {tick_ms:.2f} ms")


if __name__ == "__main__":
    main()
