"""CPU cost of one REST operation, per process: how many CPU milliseconds the gateway, dialogue, router, cost,
alerts, NATS and PostgreSQL spend on one create, one proceed + stop pair (as the load benchmark's clients do
at the end of round 1) and one GET, with the platform otherwise idle.

The load benchmark shows where latency goes when the machine is saturated; this shows what each call costs,
so a change to a REST path can be judged by a number that does not depend on how busy the machine was.
Calls are paced (`--rate` per second) so no process saturates; CPU is read from /proc before and after each
window, less the idle rate measured first.

    .venv/bin/python bench/op_cost.py --discussions 300 --rate 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).parent))

from load.clients import TOPIC, Tally, create_users, timed
from load.launch import (
    ADMIN_KEY,
    FakeProviderProcess,
    Platform,
    cpu_seconds,
    external_pids,
    postgres_pids,
    syscalls,
)
from load.stats import summary

from adp_common.service import run_loop


def counters(procs: dict[str, list[psutil.Process]]) -> dict[str, tuple[float, int]]:
    """Per process: CPU seconds so far and write system calls so far (sockets included)."""
    out = {}
    for name, ps in procs.items():
        cpu, writes = 0.0, 0
        for p in ps:
            with contextlib.suppress(psutil.Error):
                cpu += cpu_seconds(p)
            with contextlib.suppress(psutil.Error, AttributeError):
                writes += syscalls(p)[1]
        out[name] = (cpu, writes)
    return out


async def paced(n: int, rate: float, call: Callable[[int], Awaitable[Any]]) -> None:
    """Start call(i) for i < n at `rate` per second (not waiting for one to end before the next starts)."""
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call(i)))
    await asyncio.gather(*tasks)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discussions", type=int, default=300)
    ap.add_argument("--rate", type=float, default=40.0, help="operations started per second")
    ap.add_argument("--tokens", type=int, default=20, help="tokens per answer (short: round 1 ends quickly)")
    ap.add_argument("--nats", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--pg", default=os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis", default=os.environ.get("ADP_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default="/tmp/adp-op-cost")
    args = ap.parse_args()
    n, out = args.discussions, Path(args.out)
    provider = FakeProviderProcess(ttft_ms=200, tokens_per_s=30, tokens=args.tokens, jitter=0, log=out / "provider.log")
    platform = Platform(
        nats_url=args.nats,
        pg_dsn=args.pg,
        redis_url=args.redis,
        provider_url=provider.url,
        replicas={},
        log_dir=out / "logs",
        worker_concurrency=n + 50,
    )
    try:
        await provider.wait()
        await platform.start()
        procs = {p.name: [psutil.Process(p.popen.pid)] for p in platform.procs}
        procs.update({k: [psutil.Process(v)] for k, v in external_pids().items()})
        procs["postgres"] = [psutil.Process(pid) for pid in postgres_pids()]
        procs["fake-provider"] = [psutil.Process(provider.popen.pid)]
        gw = platform.gateways[0]
        tally = Tally()
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
            keys = await create_users(gw, ADMIN_KEY, n)
            heads = [{"Authorization": f"Bearer {k}"} for k in keys]
            ids: list[str] = [""] * n
            windows: dict[str, tuple[dict[str, tuple[float, int]], float, int]] = {}

            async def window(name: str, calls: int, run: Callable[[], Awaitable[Any]]) -> None:
                c0, t0 = counters(procs), time.perf_counter()
                await run()
                await asyncio.sleep(1.0)  # work the calls left behind (events, usage records) is theirs too
                c1, t1 = counters(procs), time.perf_counter()
                windows[name] = ({k: (c1[k][0] - c0[k][0], c1[k][1] - c0[k][1]) for k in c0}, t1 - t0, calls)
                print(f"  {name}: {calls} calls in {t1 - t0:.1f} s", flush=True)

            await window("idle", 1, lambda: asyncio.sleep(4.0))

            async def create(i: int) -> None:
                r = await timed(
                    tally, "create", http.post(f"{gw}/api/discussions", json={"topic": TOPIC}, headers=heads[i]), (201,)
                )
                if r is not None:
                    ids[i] = str(r["id"])

            await window("create (+ round 1)", n, lambda: paced(n, args.rate, create))
            deadline = time.monotonic() + 120
            waiting: set[int] = set()
            while len(waiting) < n and time.monotonic() < deadline:
                for i in range(n):
                    if i not in waiting and ids[i]:
                        async with http.get(f"{gw}/api/discussions/{ids[i]}", headers=heads[i]) as r:
                            if (await r.json()).get("status") == "waiting":
                                waiting.add(i)
                await asyncio.sleep(0.5)
            print(f"  {len(waiting)}/{n} discussions through round 1", flush=True)
            await asyncio.sleep(2.0)

            async def get(i: int) -> None:
                await timed(tally, "get", http.get(f"{gw}/api/discussions/{ids[i]}", headers=heads[i]))

            await window("GET /api/discussions/{id}", n, lambda: paced(n, args.rate, get))

            async def proceed_stop(i: int) -> None:
                base = f"{gw}/api/discussions/{ids[i]}"
                await timed(tally, "proceed", http.post(f"{base}/proceed", headers=heads[i]))
                await timed(tally, "stop", http.post(f"{base}/stop", headers=heads[i]))

            await window("proceed + stop", n, lambda: paced(n, args.rate, proceed_stop))
    finally:
        await platform.stop()
        provider.stop()

    idle, idle_wall, _ = windows.pop("idle")
    names = [k for k in idle if any(w[0][k][0] - idle[k][0] / idle_wall * w[1] > 0.0005 for w in windows.values())]
    print(f"\nPer call, idle rate subtracted ({n} calls at {args.rate:g}/s): CPU ms / write system calls\n")
    print("| operation | " + " | ".join(names) + " | total | latency p50 / p95 (ms) |")
    print("|---|" + "---:|" * (len(names) + 2))
    lat = {
        "create (+ round 1)": ["create"],
        "GET /api/discussions/{id}": ["get"],
        "proceed + stop": ["proceed", "stop"],
    }
    for op, (used, wall, calls) in windows.items():
        cpu = {k: max(0.0, used[k][0] - idle[k][0] / idle_wall * wall) * 1000 / calls for k in names}
        writes = {k: max(0.0, used[k][1] - idle[k][1] / idle_wall * wall) / calls for k in names}
        lats = "; ".join(
            "{} {:.1f} / {:.1f}".format(k, *(summary(tally.rest.get(k, []))[q] or 0 for q in ("p50", "p95")))
            for k in lat[op]
        )
        cells = " | ".join(f"{cpu[k]:.2f} / {writes[k]:.1f}" for k in names)
        total = f"{sum(cpu.values()):.2f} / {sum(writes.values()):.1f}"
        print(f"| {op} | {cells} | {total} | {lats} |")
    errors = dict(tally.errors)
    print(f"\nerrors: {errors or 'none'}")


if __name__ == "__main__":
    run_loop(main())
