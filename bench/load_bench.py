"""Load benchmark of the whole platform: concurrent discussions streaming through the gateway, the
OpenAI-compatible path, and one vs two copies of llm-router and dialogue — all against a fake provider
with realistic token timing, compared with the same provider called directly in the same run.

    .venv/bin/python bench/load_bench.py --discussions 100,500 --tokens-per-s 30 --out bench-results/

Uses the local NATS / PostgreSQL / Redis (ADP_NATS_URL, ADP_DATABASE_URL, ADP_REDIS_URL or the 127.0.0.1
defaults) under a unique subject prefix and database suffix, removed at the end. See bench/README.md
("Load benchmark") for what every column means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).parent))

from load import report
from load.calibrate import calibrate
from load.clients import DiscussionRun, Tally, create_users, direct_control, run_streams
from load.launch import (
    ADMIN_KEY,
    FakeProviderProcess,
    Platform,
    ResourceSampler,
    external_pids,
    parse_replicas,
    postgres_pids,
)
from load.profile import PySpy
from load.stats import (
    diff,
    flatten,
    gateway_rest_latencies,
    gauge_value,
    lag_buckets,
    lag_quantile,
    pct,
    ratio,
    summary,
)

from adp_cli.nats_cluster import NatsCluster, start_nats_cluster
from adp_common.service import run_loop

TURNS_PER_ROUND = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--discussions", default="100,500", help="phase A sizes, comma-separated")
    ap.add_argument("--ttft-ms", type=float, default=200.0, help="fake provider time to first token")
    ap.add_argument("--tokens-per-s", type=float, default=30.0, help="fake provider token rate per stream")
    ap.add_argument(
        "--tokens", type=int, default=200,
        help="tokens per answer (a persona turn of ~150 words; the dialogue service allows up to 600)",
    )  # fmt: skip
    ap.add_argument("--jitter", type=float, default=0.0, help="± fraction of random TTFT jitter (0 = fixed)")
    ap.add_argument("--replicas", default="", help="copies of the base run, e.g. router=1,dialogue=1 (default 1 each)")
    ap.add_argument("--scaling-replicas", default="router=2,dialogue=2", help="copies for the scaling check")
    ap.add_argument("--scaling-discussions", type=int, default=0, help="size of the scaling check (default: largest)")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling check")
    ap.add_argument("--openai-levels", default="1,50,200", help="phase B concurrency levels ('' to skip)")
    ap.add_argument("--openai-min-requests", type=int, default=10, help="at least this many calls per level and path")
    ap.add_argument(
        "--ramp-s", type=float, default=None,
        help="discussion and stream starts (phases A and B, both paths) spread over this many seconds (0: at "
        "once). Default in phase A: one round (3 x (TTFT + tokens / rate)), so that with two or more rounds "
        "every discussion streams at once for a round while round ends (and proceeds) come evenly, as with "
        "independent users; one turn with --rounds 1. 2 s in phase B",
    )  # fmt: skip
    ap.add_argument("--rest-rps", type=float, default=20.0, help="GET probes per second during phase A")
    ap.add_argument(
        "--control-streams", type=int, default=8,
        help="one-token direct calls kept running during phase A: the same-time baseline (0: none)",
    )  # fmt: skip
    ap.add_argument(
        "--rounds", type=int, default=2,
        help="rounds per discussion: the client POSTs proceed as a round completes, keeps its stream, and stops "
        "the discussion after the last",
    )  # fmt: skip
    ap.add_argument(
        "--end-proceed", action="store_true",
        help="after the last round POST proceed and then stop at once (with --rounds 1: every user at the same "
        "moment, the closing burst of earlier runs)",
    )  # fmt: skip
    ap.add_argument("--stream-timeout", type=float, default=240.0, help="seconds a discussion may take (all rounds)")
    ap.add_argument("--log-level", default="INFO", help="ADP_LOG_LEVEL of the services")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra service env (repeatable)")
    ap.add_argument("--py-spy", default="", metavar="EXE", help="sample gateway/dialogue/router with this py-spy")
    ap.add_argument("--profile-s", type=int, default=20, help="py-spy sampling time per phase A")
    ap.add_argument("--out", default="bench-results", help="output directory")
    ap.add_argument("--nats", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument(
        "--nats-cluster", type=int, default=0, metavar="N",
        help="run on an embedded N-server JetStream cluster (N >= 3) instead of --nats, every stream and bucket "
        "with N replicas (ADP_STREAM_REPLICAS); its servers' CPU is summed as nats-server",
    )  # fmt: skip
    ap.add_argument("--pg", default=os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis", default=os.environ.get("ADP_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.nats_cluster and args.nats_cluster < 3:
        ap.error("--nats-cluster needs at least 3 servers")
    args.nats_pids = []  # the cluster's servers, once started
    turn_s = args.ttft_ms / 1000 + args.tokens / args.tokens_per_s
    default_ramp = turn_s * (TURNS_PER_ROUND if args.rounds > 1 else 1)
    args.ramp_a = round(default_ramp, 2) if args.ramp_s is None else args.ramp_s
    args.ramp_b = 2.0 if args.ramp_s is None else args.ramp_s
    return args


def http_client(n: int) -> aiohttp.ClientSession:
    # no total timeout: an SSE stream lasts as long as its round; a silent minute is an error
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=60.0)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n * 2 + 100), timeout=timeout)


async def lag_snapshot(http: aiohttp.ClientSession, platform: Platform) -> dict[str, dict[float, float]]:
    """Every service's event-loop lag histogram (cumulative buckets) from its /metrics."""
    out = {}
    for p in platform.procs:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(p.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                out[p.name] = lag_buckets(await r.text())
    return out


async def watch_router(
    http: aiohttp.ClientSession, platform: Platform, t0: float, out: list[tuple[float, float, float]]
) -> None:
    """Once a second, every router copy's chunk interval and event-loop lag (moving average) from its /metrics:
    (seconds since `t0`, the largest interval in ms, the largest lag in ms) — whether the interval grew with
    the streams only or with the lag too."""
    routers = [p for p in platform.procs if p.service == "llm-router"]
    while True:
        intervals, lags = [], []
        for p in routers:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(p.url + "/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    text = await r.text()
                interval = gauge_value(text, "adp_router_chunk_interval_seconds")
                lag = gauge_value(text, "adp_event_loop_lag_recent_seconds")
                if interval is not None and lag is not None:
                    intervals.append(interval * 1000)
                    lags.append(lag * 1000)
        if intervals:
            out.append((time.perf_counter() - t0, max(intervals), max(lags)))
        await asyncio.sleep(1.0)


def named_pids(platform: Platform, provider: FakeProviderProcess, cluster: bool = False) -> dict[str, int]:
    pids = {p.name: p.popen.pid for p in platform.procs}
    pids["fake-provider"] = provider.popen.pid
    pids["client"] = os.getpid()
    if not cluster:  # a cluster's servers are a CPU group (see phase_a)
        pids.update(external_pids())
    return pids


async def phase_a(
    args: argparse.Namespace,
    platform: Platform,
    provider: FakeProviderProcess,
    keys: list[str],
    n: int,
    direct: Tally | None,
) -> dict[str, Any]:
    """N discussions through the gateway (and, when `direct` is None, the same provider directly first)."""
    url = provider.url + "/v1/chat/completions"
    async with http_client(n) as http:
        if direct is None:
            direct = Tally()
            calls = TURNS_PER_ROUND * args.rounds
            print(f"  direct: {n} concurrent streams × {calls} calls …", flush=True)
            await run_streams(url, {}, "fake-model", n, calls, direct, args.ramp_a)
        print(f"  gateway: {n} discussions, {args.rounds} round(s) …", flush=True)
        run = DiscussionRun(
            http=http,
            gateways=platform.gateways,
            keys=keys[:n],
            tokens=args.tokens,
            stream_timeout_s=args.stream_timeout,
            rest_rps=args.rest_rps,
            rounds=args.rounds,
            end_proceed=args.end_proceed,
        )
        groups = {"postgres": postgres_pids(), **({"nats-server": args.nats_pids} if args.nats_pids else {})}
        sampler = ResourceSampler(named_pids(platform, provider, bool(args.nats_pids)), groups=groups)
        spy = None
        if args.py_spy:
            hot = ("gateway", "dialogue", "llm-router")
            targets = {p.name: p.popen.pid for p in platform.procs if p.service in hot}
            spy = PySpy(args.py_spy, Path(args.out) / "profiles", f"{platform.prefix}-{n}", targets, args.profile_s)
        lag_before = await lag_snapshot(http, platform)
        sampler.start()
        t_start = time.perf_counter()
        phase_start = time.time()
        control, control_stop = Tally(), asyncio.Event()
        control_task = asyncio.create_task(direct_control(url, args.control_streams, control, control_stop))
        run_task = asyncio.create_task(run.run(n, args.ramp_a))
        router_samples: list[tuple[float, float, float]] = []
        router_watch = asyncio.create_task(watch_router(http, platform, t_start, router_samples))
        if spy is not None:
            await asyncio.sleep(3)  # past the creation burst, into steady streaming
            spy.start()
        wall = await run_task
        router_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await router_watch
        control_stop.set()
        await control_task
        resources = await sampler.stop()
        lag_after = await lag_snapshot(http, platform)
        phase_end = time.time() + 1
        await asyncio.sleep(1.5)  # let the gateways write their last access-log lines
        profiles = await spy.stop() if spy is not None else {}
    t = run.tally
    g, d = summary(t.ttfc), summary(direct.ttfc)
    span = (t.last_chunk_t - t.first_chunk_t) if t.first_chunk_t and t.last_chunk_t else None
    rest_all = flatten(t.rest.values())
    gw_logs = sorted((platform.log_dir / platform.prefix).glob("gateway-*.log"))
    rest_gw = gateway_rest_latencies(gw_logs, phase_start, phase_end)
    copies = platform.replicas
    label = f"{n} disc." + ("" if all(v == 1 for v in copies.values()) else f" ({report._copies(copies)})")
    row = {
        "label": label,
        "n": n,
        "replicas": copies,
        "wall_s": wall,
        "completed": t.completed,
        "peak_live": run.peak_live,
        "errors": dict(t.errors),
        "direct_errors": dict(direct.errors),
        "turns": t.turns,
        "turns_missing_chunks": t.turns_missing_chunks,
        "missing_detail": dict(t.errors_detail),
        "chunks": t.chunks,
        "chunks_per_s": t.chunks / span if span else None,
        "turns_per_s": t.turns / wall if wall else None,
        "ttfc": g,
        "ttfc_turn1": summary(t.ttfc_turn1),
        "ttfc_request": summary(t.ttfc_request),
        "ttfc_delivery": summary(t.ttfc_delivery),
        "ttfc_to_provider": summary(t.ttfc_to_provider),
        "ttfc_provider_wait": summary(t.ttfc_provider_wait),
        # every measured turn: (s from the phase start, request ms, delivery ms)
        "ttfc_split": [(round(s - t_start, 3), round(r, 2), round(dl, 2)) for s, r, dl in t.ttfc_split],
        "direct_ttft": d,
        "added_ttfc_p50_ms": diff(g["p50"], d["p50"]),
        "added_ttfc_p99_ms": diff(g["p99"], d["p99"]),
        "ttfc_ratio_p50": ratio(g["p50"], d["p50"]),
        "ttfc_ratio_p99": ratio(g["p99"], d["p99"]),
        "chunk_lat": summary(t.chunk_lat),
        "direct_chunk_lat": summary(direct.chunk_lat),
        "round_ms": summary(t.total),
        "direct_call_ms": summary(direct.total),
        "rest": {k: summary(v) for k, v in t.rest.items()},
        "rest_p95_ms": summary(rest_all)["p95"],
        "rest_gateway": {k: summary(v) for k, v in rest_gw.items()},
        "rest_p95_gateway_ms": summary(flatten(rest_gw.values()))["p95"],
        "resources": resources,
        "loop_lag": {
            name: {q: lag_quantile(lag_before.get(name, {}), after, x) for q, x in (("p50", 0.5), ("p99", 0.99))}
            for name, after in lag_after.items()
        },
        "profiles": profiles,
        "timeline": timeline(t.samples, t_start, d["p50"], sampler.timeline, t.ttfc_split, router_samples),
        "full_load": full_load(
            t.samples, control.samples, t_start, run.all_live_t, run.first_done_t, d, sampler.timeline, router_samples
        ),
        "control_errors": dict(control.errors),
        "_direct": direct,
    }
    print(
        f"  → ok {t.completed}/{n}, errors {sum(t.errors.values())}, TTFC p50/p99 {g['p50']}/{g['p99']} ms "
        f"(direct {d['p50']}/{d['p99']}), REST p95 {row['rest_p95_ms']} ms, {wall:.1f} s",
        flush=True,
    )
    return row


def full_load(
    samples: list[tuple[float, str, float]],
    control: list[tuple[float, str, float]],
    t_start: float,
    since: float | None,
    until: float | None,
    direct: dict[str, Any],
    cpu: list[tuple[float, float, dict[str, float], float]] = (),
    router: list[tuple[float, float, float]] = (),
) -> dict[str, Any] | None:
    """The phase's figures while every discussion was live (created and not yet through its last round):
    turns whose `message-start` came, and REST calls that ended, in that window. The targets are read here —
    the load they name is N discussions streaming — apart from the ramps before and after it."""
    if since is None or until is None or until <= since:
        return None
    ttfc = [ms for t, what, ms in samples if what == "ttfc" and since <= t < until]
    rest: dict[str, list[float]] = {}
    for t, what, ms in samples:
        if what != "ttfc" and since <= t < until:
            rest.setdefault(what, []).append(ms)
    g = summary(ttfc)
    c = summary([ms for t, _, ms in control if since <= t < until])
    # the window in seconds since t_start, the clock of the router watcher (the CPU sampler's starts just before)
    from_s, to_s = since - t_start, until - t_start
    in_window = [sample for sample in cpu if from_s <= sample[0] < to_s]
    busy = [sample[1] for sample in in_window]
    steal = [sample[3] for sample in in_window]
    interval = [ms for at, ms, _ in router if from_s <= at < to_s]
    return {
        "from_s": from_s,
        "to_s": to_s,
        "ttfc": g,
        "added_ttfc_p50_ms": diff(g["p50"], direct["p50"]),
        "added_ttfc_p99_ms": diff(g["p99"], direct["p99"]),
        # against the direct calls made during the window (same machine load)
        "control_ttft": c,
        "added_vs_control_p50_ms": diff(g["p50"], c["p50"]),
        "added_vs_control_p99_ms": diff(g["p99"], c["p99"]),
        "rest": {k: summary(v) for k, v in rest.items()},
        "rest_p95_ms": summary(flatten(rest.values()))["p95"],
        "machine_cpu_pct": sum(busy) / len(busy) if busy else None,
        # the hypervisor's share: CPU this VM was ready to use and did not get (average, and the worst sample)
        "steal_pct": sum(steal) / len(steal) if steal else None,
        "steal_max_pct": max(steal) if steal else None,
        # the router's chunk interval over the window (ms; sampled once a second)
        "router_interval_ms": summary(interval) if interval else None,
    }


def timeline(
    samples: list[tuple[float, str, float]],
    t_start: float,
    direct_p50: float | None,
    cpu: list[tuple[float, float, dict[str, float], float]],
    split: list[tuple[float, float, float]] = (),
    router: list[tuple[float, float, float]] = (),
    bin_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Per-second view of a phase: added TTFC (vs the direct p50; also split into its added request half and
    its delivery half) and REST latency quantiles of the samples taken in that second, beside the machine's
    and each process's CPU; shows what a latency tail lines up with (the creation burst, the proceed/stop
    burst at the end, a CPU-saturated second)."""
    bins: dict[int, dict[str, list[float]]] = {}
    for t, what, ms in samples:
        kind = "ttfc" if what == "ttfc" else "rest"
        value = ms - (direct_p50 or 0.0) if kind == "ttfc" else ms
        bins.setdefault(int((t - t_start) / bin_s), {}).setdefault(kind, []).append(value)
    for t, request_ms, delivery_ms in split:  # TTFC's two halves (see clients.Tally.ttfc_split)
        at = bins.setdefault(int((t - t_start) / bin_s), {})
        at.setdefault("request", []).append(request_ms - (direct_p50 or 0.0))
        at.setdefault("delivery", []).append(delivery_ms)
    out = []
    for b in sorted(bins):
        row: dict[str, Any] = {"t": b * bin_s}
        for kind, vals in bins[b].items():
            row[kind] = {"n": len(vals), "p50": pct(vals, 0.5), "p99": pct(vals, 0.99), "max": max(vals)}
        in_bin = [c for c in cpu if b * bin_s <= c[0] < (b + 1) * bin_s]
        if in_bin:
            row["cpu_machine"] = sum(c[1] for c in in_bin) / len(in_bin)
            row["steal"] = max(c[3] for c in in_bin)
            names = in_bin[0][2].keys()
            row["cpu"] = {n: round(sum(c[2].get(n, 0.0) for c in in_bin) / len(in_bin)) for n in names}
        sampled = [r for r in router if b * bin_s <= r[0] < (b + 1) * bin_s]
        if sampled:
            row["router_interval_ms"] = max(r[1] for r in sampled)
            row["router_lag_ms"] = max(r[2] for r in sampled)
        out.append(row)
    return out


async def phase_b(args: argparse.Namespace, platform: Platform, provider: FakeProviderProcess, key: str) -> list:
    rows = []
    levels = [int(x) for x in args.openai_levels.split(",") if x.strip()]
    gw = platform.gateways[0]
    for c in levels:
        per = max(1, math.ceil(args.openai_min_requests / c))
        res: dict[str, Any] = {"concurrency": c}
        for path, url, headers in (
            ("direct", provider.url + "/v1/chat/completions", {}),
            ("gateway", gw + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}),
        ):
            t = Tally()
            await run_streams(url, headers, "fake-model", c, per, t, args.ramp_b)
            res[path] = {"ttft": summary(t.ttfc), "total": summary(t.total), "errors": dict(t.errors)}
        d, g = res["direct"], res["gateway"]
        res["overhead"] = {
            f"{m}_{q}": {"diff": diff(g[m][q], d[m][q]), "ratio": ratio(g[m][q], d[m][q])}
            for m in ("ttft", "total")
            for q in ("p50", "p99")
        }
        print(
            f"  openai c={c}: TTFT p50 direct {d['ttft']['p50']} gateway {g['ttft']['p50']}; "
            f"errors {sum(g['errors'].values())}",
            flush=True,
        )
        rows.append(res)
    return rows


async def launch(args: argparse.Namespace, provider: FakeProviderProcess, replicas: dict[str, int], out: Path):
    sizes = [int(x) for x in args.discussions.split(",") if x.strip()]
    biggest = max([*sizes, args.scaling_discussions or 0])
    extra = dict(kv.split("=", 1) for kv in args.env)
    platform = Platform(
        nats_url=args.nats,
        pg_dsn=args.pg,
        redis_url=args.redis,
        provider_url=provider.url,
        replicas=replicas,
        log_dir=out / "logs",
        worker_concurrency=biggest + 50,
        extra_env=extra,
        log_level=args.log_level,
    )
    print(f"starting platform {platform.prefix} ({report._copies(replicas)}) …", flush=True)
    t0 = time.perf_counter()
    await platform.start()
    async with http_client(16) as http:
        keys = await create_users(platform.gateways[0], ADMIN_KEY, biggest + 1)
        warm = DiscussionRun(http, platform.gateways, keys[-1:], args.tokens, 120, 0, False)
        await warm.run(1)  # warm up every hop once (connections, caches)
        if warm.tally.completed != 1:
            print(f"  warm-up discussion failed: {dict(warm.tally.errors)}", flush=True)
    print(f"  ready in {time.perf_counter() - t0:.1f} s ({len(keys)} users)", flush=True)
    return platform, keys


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sizes = [int(x) for x in args.discussions.split(",") if x.strip()]
    base_replicas = parse_replicas(args.replicas)
    scale_n = args.scaling_discussions or max(sizes)
    print("calibrating (this machine's speed, idle) …", flush=True)
    host = await calibrate()
    provider = FakeProviderProcess(
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        tokens=args.tokens,
        jitter=args.jitter,
        log=out / "logs" / f"fake-provider-{stamp}.log",
    )
    result: dict[str, Any] = {
        "started": stamp,
        "config": {
            "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/load_bench.py", *sys.argv[1:]]),
            "cpus": os.cpu_count(),
            "mem_gb": psutil.virtual_memory().total / 2**30,
            "ttft_ms": args.ttft_ms,
            "tokens_per_s": args.tokens_per_s,
            "tokens": args.tokens,
            "jitter": args.jitter,
            "ramp_s": args.ramp_a,
            "rounds": args.rounds,
            "end_proceed": args.end_proceed,
            "ramp_b_s": args.ramp_b,
            "log_level": args.log_level,
            "replicas": base_replicas,
            "nats_cluster": args.nats_cluster,
            "loadavg_start": os.getloadavg(),
            "host": host,
        },
        "phase_a": [],
        "phase_b": [],
    }
    platform: Platform | None = None
    directs: dict[int, Tally] = {}
    cluster: NatsCluster | None = None
    try:
        if args.nats_cluster:
            store = Path(tempfile.mkdtemp(prefix="adp-bench-nats-"))
            cluster = await asyncio.to_thread(start_nats_cluster, args.nats_cluster, store, log_dir=out / "logs")
            args.nats, args.nats_pids = cluster.url, [n.proc.pid for n in cluster.nodes if n.proc]
            args.env.append(f"ADP_STREAM_REPLICAS={args.nats_cluster}")
            print(f"NATS cluster of {args.nats_cluster}: {cluster.url}", flush=True)
        await provider.wait()
        platform, keys = await launch(args, provider, base_replicas, out)
        for n in sizes:
            print(f"phase A: {n} discussions", flush=True)
            row = await phase_a(args, platform, provider, keys, n, None)
            directs[n] = row.pop("_direct")
            result["phase_a"].append(row)
        if args.openai_levels.strip():
            print("phase B: OpenAI-compatible path", flush=True)
            result["phase_b"] = await phase_b(args, platform, provider, keys[0])
        if not args.no_scaling:
            base_row = next((r for r in result["phase_a"] if r["n"] == scale_n), None)
            if base_row is None:
                print(f"scaling baseline: {scale_n} discussions", flush=True)
                base_row = await phase_a(args, platform, provider, keys, scale_n, None)
                directs[scale_n] = base_row.pop("_direct")
                result["phase_a"].append(base_row)
            await platform.stop()
            platform = None
            platform, keys = await launch(args, provider, parse_replicas(args.scaling_replicas), out)
            print(f"scaling: {scale_n} discussions with {args.scaling_replicas}", flush=True)
            row = await phase_a(args, platform, provider, keys, scale_n, directs[scale_n])
            row.pop("_direct")
            result["phase_a"].append(row)
            result["scaling_base"], result["scaling"] = base_row, row
    finally:
        if platform is not None:
            await platform.stop()
        provider.stop()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
            shutil.rmtree(cluster.nodes[0].store.parent, ignore_errors=True)
    result["config"]["loadavg_end"] = os.getloadavg()
    # again at the end: the host's speed can change within a run (it did by up to 1.9x within an hour)
    result["config"]["host_end"] = await calibrate()
    md = report.markdown(result)
    print("\n" + md)
    base = out / f"load-{stamp}"
    Path(f"{base}.md").write_text(md)
    Path(f"{base}.json").write_text(json.dumps(result, indent=2, default=str))
    with contextlib.suppress(Exception):
        report.plot(result, Path(f"{base}.png"))
    print(f"written {base}.md, .json, .png")
    return result


if __name__ == "__main__":
    run_loop(main())  # uvloop, like the services
