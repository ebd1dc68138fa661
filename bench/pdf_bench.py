"""Hostile-PDF benchmark: the gateway's REST latency while PDFs that cost much to read are uploaded.

    .venv/bin/python bench/pdf_bench.py [--rounds 3] [--phase-s 5] [--uploads 10] [--rps 20]

Starts dialogue and one gateway as separate processes (NATS, PostgreSQL, Redis from the options or the
local defaults). A probe client calls `GET /api/discussions` at a steady rate for the whole run, while
idle and hostile phases alternate `--rounds` times: in a hostile phase `--uploads` clients each keep one
hostile PDF upload (a few KB of empty text operators, see adp_testing.hostile) in flight. The probe's
p50/p95 per phase kind and the hostile/idle p95 ratio are printed and written as JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from adp_common.service import run_loop
from adp_testing.fixtures import cleanup_prefix
from adp_testing.hostile import empty_text_operators_pdf
from adp_testing.platform import ADMIN_KEY, fast_env
from adp_testing.procs import ServiceProcesses


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


async def probe(c: httpx.AsyncClient, rps: float, phase: list[str], out: dict[str, list[float]], stop: asyncio.Event):
    """One GET every 1/rps seconds; each latency is filed under the phase it started in."""
    while not stop.is_set():
        kind, start = phase[0], time.perf_counter()
        r = await c.get("/api/discussions")
        r.raise_for_status()
        out[kind].append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(max(0.0, 1 / rps - (time.perf_counter() - start)))


async def uploader(c: httpx.AsyncClient, data: bytes, active: asyncio.Event, stop: asyncio.Event, codes: Counter[int]):
    while not stop.is_set():
        await active.wait()
        if stop.is_set():
            return
        r = await c.post("/api/files", files={"file": ("hostile.pdf", data, "application/pdf")})
        codes[r.status_code] += 1


async def measure(url: str, args: argparse.Namespace) -> dict[str, object]:
    data = empty_text_operators_pdf(pages=6)
    lat: dict[str, list[float]] = {"idle": [], "hostile": []}
    phase, active, stop, codes = ["idle"], asyncio.Event(), asyncio.Event(), Counter[int]()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        await c.get("/api/discussions")  # warm the key cache and the connection
        tasks = [asyncio.create_task(probe(c, args.rps, phase, lat, stop))]
        tasks += [asyncio.create_task(uploader(c, data, active, stop, codes)) for _ in range(args.uploads)]
        for _ in range(args.rounds):
            for kind in ("idle", "hostile"):
                phase[0] = kind
                active.set() if kind == "hostile" else active.clear()
                await asyncio.sleep(args.phase_s)
        stop.set()
        active.set()
        await asyncio.gather(*tasks)
    idle_p95, hostile_p95 = pct(lat["idle"], 0.95), pct(lat["hostile"], 0.95)
    return {
        "pdf_bytes": len(data),
        "uploads_in_flight": args.uploads,
        "rounds": args.rounds,
        "phase_s": args.phase_s,
        "upload_status_counts": {str(k): v for k, v in sorted(codes.items())},
        "idle": {"n": len(lat["idle"]), "p50_ms": pct(lat["idle"], 0.5), "p95_ms": idle_p95},
        "hostile": {"n": len(lat["hostile"]), "p50_ms": pct(lat["hostile"], 0.5), "p95_ms": hostile_p95},
        "p95_ratio": hostile_p95 / idle_p95,
    }


async def main(args: argparse.Namespace) -> None:
    prefix = "pb" + uuid.uuid4().hex[:8]
    procs = ServiceProcesses(nats_url=args.nats, pg_dsn=args.pg, prefix=prefix)
    env = fast_env(ADP_REDIS_URL=args.redis)
    try:
        started = await procs.start_healthy(["dialogue", "gateway"], extra_env=env, timeout=90)
        gateway = next(p for p in started if p.service == "gateway")
        result = await measure(gateway.url, args)
    finally:
        await procs.stop_all()
        await procs.drop_databases()
        await cleanup_prefix(args.nats, prefix)
    print(json.dumps(result, indent=2))
    out_dir = Path("bench-results")
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"pdf-bench-{int(time.time())}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phase-s", type=float, default=5.0)
    ap.add_argument("--uploads", type=int, default=10)
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--nats", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--pg", default=os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis", default=os.environ.get("ADP_REDIS_URL", "redis://127.0.0.1:6379/0"))
    run_loop(main(ap.parse_args()))
