"""Router overhead benchmark: the same streamed completions against the fake provider, called directly
(aiohttp, SSE) and through the llm-router over NATS (LLMClient), at several concurrency levels.

    .venv/bin/python bench/router_bench.py [--levels 1,50,200] [--requests-per-stream 4] [--repeat 2]

Starts the fake provider and one router as separate processes (NATS from ADP_NATS_URL, default local).
Each measurement runs its client in a fresh process of its own (the same code shape for both paths),
so neither path pays for the other's event loop; direct and router runs alternate `--repeat` times per
level and their samples are pooled. Prints TTFT and total time p50/p99 for both paths and the router's
overhead (difference and ratio), and writes the figures as JSON to bench-results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import psutil

from adp_cli.procs import free_port
from adp_common.bus import Bus
from adp_common.llm_client import LLMClient
from adp_common.schemas.llm import ChatMessage, CompletionChunk, CompletionRequest
from adp_common.service import run_loop
from adp_testing.fixtures import cleanup_prefix

sys.path.insert(0, str(Path(__file__).parent))
from load.launch import cpu_seconds


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as c:
        while time.monotonic() < deadline:
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def direct_one(session: aiohttp.ClientSession, base: str) -> tuple[float, float]:
    """One streamed call straight to the provider, with the HTTP client the router itself uses (aiohttp):
    the baseline is the best a caller could do without the router."""
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "benchmark"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    async with session.post(base + "/chat/completions", json=body) as resp:
        async for data in resp.content.iter_any():
            if ttft is None and b'"content": "word' in data:
                ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (ttft if ttft is not None else total), total


async def router_one(client: LLMClient) -> tuple[float, float]:
    t0 = time.perf_counter()
    first: list[float] = []

    async def on_chunk(c: CompletionChunk) -> None:
        if not first and c.delta:
            first.append(time.perf_counter() - t0)

    req = CompletionRequest(messages=[ChatMessage(role="user", content="benchmark")], route="default", timeout_s=60)
    await client.complete(req, on_chunk)
    total = time.perf_counter() - t0
    return (first[0] if first else total), total


async def run_level(fn, concurrency: int, per_stream: int, ramp_s: float = 0.0) -> tuple[list[float], list[float]]:
    """`concurrency` streams, each running `per_stream` calls back to back. Stream i starts after
    i/concurrency of `ramp_s` (one call's duration spreads them evenly, as independent users would be);
    with no ramp they all start at once, and the first calls measure that burst."""
    ttfts: list[float] = []
    totals: list[float] = []

    async def worker(i: int) -> None:
        await asyncio.sleep(ramp_s * i / concurrency)
        for _ in range(per_stream):
            t, tot = await fn()
            ttfts.append(t * 1000)
            totals.append(tot * 1000)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ttfts, totals


def summarise(ttfts: list[float], totals: list[float]) -> dict[str, float]:
    return {
        "n": len(ttfts),
        "ttft_p50_ms": pct(ttfts, 0.5),
        "ttft_p99_ms": pct(ttfts, 0.99),
        "total_p50_ms": pct(totals, 0.5),
        "total_p99_ms": pct(totals, 0.99),
        "ttft_mean_ms": statistics.fmean(ttfts),
    }


async def client_process(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: warm up, run the level, print the samples as JSON."""
    c, per = args.concurrency, args.per
    if args.client == "direct":
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            await run_level(lambda: direct_one(http, args.base), c, 1)  # opens c pooled connections
            ttfts, totals = await run_level(lambda: direct_one(http, args.base), c, per, args.ramp_s)
    else:
        bus = await Bus.connect(args.nats, prefix=args.prefix, name="bench-client")
        try:
            llm = LLMClient(bus, chunk_buffer=4096)
            await run_level(lambda: router_one(llm), c, 1)  # and the router its c connections
            ttfts, totals = await run_level(lambda: router_one(llm), c, per, args.ramp_s)
        finally:
            await bus.close(grace=1)
    print(json.dumps({"ttft": ttfts, "total": totals}))


def measure(
    path: str, concurrency: int, per: int, ramp_s: float, base: str, nats: str, prefix: str
) -> tuple[list[float], ...]:
    cmd = [
        sys.executable, __file__, "--client", path, "--concurrency", str(concurrency), "--per", str(per),
        "--ramp-s", str(ramp_s), "--base", base, "--nats", nats, "--prefix", prefix,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return data["ttft"], data["total"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,50,200")
    ap.add_argument("--requests-per-stream", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="alternating direct/router runs per level (samples pooled)")
    ap.add_argument("--ttft-ms", type=float, default=20.0, help="fake provider time to first token")
    ap.add_argument("--token-interval-ms", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=10, help="tokens per answer")
    ap.add_argument("--min-requests", type=int, default=40, help="at least this many requests per level and run")
    ap.add_argument("--nats", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument(
        "--ramp", choices=["spread", "burst"], default="spread",
        help="spread: stream starts spread over one call's duration (default); burst: all at once",
    )  # fmt: skip
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra router env (repeatable)")
    # client-process mode (internal)
    ap.add_argument("--client", choices=["direct", "router"], help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--per", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--base", default="", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ramp-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        await client_process(args)
        return
    levels = [int(x) for x in args.levels.split(",")]
    call_s = (args.ttft_ms + args.token_interval_ms * (args.tokens - 1)) / 1000
    ramp_s = call_s if args.ramp == "spread" else 0.0
    prefix = "bench" + uuid.uuid4().hex[:8]
    fake_port, admin_port = free_port(), free_port()
    py = sys.executable
    fake = subprocess.Popen(
        [py, "-m", "adp_testing.fake_provider", "--port", str(fake_port), "--ttft-ms", str(args.ttft_ms),
         "--token-interval-ms", str(args.token_interval_ms), "--tokens", str(args.tokens)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{fake_port}/v1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    env.update(
        {
            "ADP_NATS_URL": args.nats,
            "ADP_SUBJECT_PREFIX": prefix,
            "ADP_HTTP_PORT": str(admin_port),
            "ADP_LOG_LEVEL": "WARNING",
            "ADP_ROUTER_PROVIDERS": json.dumps(
                {"fake": {"kind": "openai", "base_url": base, "api_key": "k", "models": ["fake-model"]}}
            ),
            "ADP_ROUTER_ROUTES": json.dumps({"default": ["fake/fake-model"]}),
        }
    )
    env.update(kv.split("=", 1) for kv in args.env)
    router = subprocess.Popen([py, "-m", "adp_router.main"], env=env)
    router_proc = psutil.Process(router.pid)
    try:
        await wait_http(f"http://127.0.0.1:{fake_port}/_stats")
        await wait_http(f"http://127.0.0.1:{admin_port}/health")
        rows = []
        for c in levels:
            per = max(args.requests_per_stream, -(-args.min_requests // c))
            samples: dict[str, tuple[list[float], list[float]]] = {"direct": ([], []), "router": ([], [])}
            router_cpu_s = 0.0
            for _ in range(args.repeat):
                for path in ("direct", "router"):
                    cpu0 = cpu_seconds(router_proc)
                    t, tot = await asyncio.to_thread(measure, path, c, per, ramp_s, base, args.nats, prefix)
                    if path == "router":
                        router_cpu_s += cpu_seconds(router_proc) - cpu0
                    samples[path][0].extend(t)
                    samples[path][1].extend(tot)
            row = {"concurrency": c, **{k: summarise(*v) for k, v in samples.items()}}
            # the router's own CPU per call (user + system): a figure that depends little on how busy the
            # shared machine was, unlike the times
            row["router_cpu_ms_per_call"] = router_cpu_s * 1000 / max(1, len(samples["router"][0]))
            rows.append(row)
        print(
            f"\nfake provider: ttft {args.ttft_ms:g} ms, token interval {args.token_interval_ms:g} ms; "
            f"{args.tokens} tokens per answer; {os.cpu_count()} CPUs; each client in its own process; "
            f"stream starts: {args.ramp}\n"
        )
        hdr = f"{'streams':>7} {'path':>7} {'n':>5} {'TTFT p50':>9} {'TTFT p99':>9} {'total p50':>10} {'total p99':>10}"
        print(hdr)
        print("-" * len(hdr))
        for row in rows:
            for path in ("direct", "router"):
                x = row[path]
                print(
                    f"{row['concurrency']:>7} {path:>7} {x['n']:>5} {x['ttft_p50_ms']:>9.2f} {x['ttft_p99_ms']:>9.2f} "
                    f"{x['total_p50_ms']:>10.2f} {x['total_p99_ms']:>10.2f}"
                )
            d, r = row["direct"], row["router"]
            row["overhead"] = {
                k: {"diff_ms": r[k] - d[k], "ratio": r[k] / d[k] if d[k] else None}
                for k in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p99_ms")
            }
            o = row["overhead"]
            print(
                f"{row['concurrency']:>7} {'added':>7} {'':>5} {o['ttft_p50_ms']['diff_ms']:>+9.2f} "
                f"{o['ttft_p99_ms']['diff_ms']:>+9.2f} {o['total_p50_ms']['diff_ms']:>+10.2f} "
                f"{o['total_p99_ms']['diff_ms']:>+10.2f}"
            )
            print(
                f"{row['concurrency']:>7} {'ratio':>7} {'':>5} {o['ttft_p50_ms']['ratio']:>9.3f} "
                f"{o['ttft_p99_ms']['ratio']:>9.3f} {o['total_p50_ms']['ratio']:>10.3f} "
                f"{o['total_p99_ms']['ratio']:>10.3f}"
            )
            print(f"{row['concurrency']:>7} router CPU per call: {row['router_cpu_ms_per_call']:.2f} ms")
        out_dir = Path("bench-results")
        out_dir.mkdir(exist_ok=True)
        out = out_dir / f"router-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
        meta = {
            "ttft_ms": args.ttft_ms,
            "token_interval_ms": args.token_interval_ms,
            "tokens": args.tokens,
            "repeat": args.repeat,
            "ramp": args.ramp,
            "cpus": os.cpu_count(),
            "router_env": args.env,
        }
        out.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))
        print(f"\nwritten to {out}")
    finally:
        router.terminate()
        fake.terminate()
        for p in (router, fake):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await cleanup_prefix(args.nats, prefix)


if __name__ == "__main__":
    run_loop(main())  # uvloop, like the services (both paths' clients alike)
