"""The OpenAI-compatible path under many short, fast streams: the same streamed `/v1/chat/completions` calls sent
straight to a fast provider ("direct"), through the platform (gateway -> llm-router -> provider) and, with
`--litellm`, through a LiteLLM proxy, interleaved, at several levels of concurrent streams.

    .venv/bin/python bench/peer_bench.py [--levels 1,50,200] [--repeat 3] [--litellm] [--replicas router=2]

The provider (`bench/load/provider.py`) answers after `--ttft-ms` (20) with `--tokens` (20) tokens
`--token-interval-ms` (5) apart, every token stamped with the wall-clock time it was sent, so the client times
each token's delay from the provider to itself. Every level runs `--repeat` rounds; in each round every path
runs once (the order rotates), and a path's figures against direct are taken within the round: the table shows
the median over the rounds. LiteLLM runs from a virtual environment of its own (`bench-results/litellm-venv`,
created with `pip install 'litellm[proxy]'` on first use; never a dependency of the workspace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from load.launch import ADMIN_KEY, FakeProviderProcess, Platform, cpu_seconds, parse_replicas, wait_http
from load.profile import PySpy
from load.provider import stamps
from load.sse_http import ConnectionSlot
from load.stats import pct

from adp_cli.procs import free_port
from adp_common.service import run_loop

LITELLM_VENV = Path("bench-results/litellm-venv")
LITELLM_KEY = "sk-peer-bench-0123456789abcdef"
MODEL = "fake-model"
PROMPT = "Say something short."


@dataclass
class Target:
    """Where one path's calls go, and the processes whose CPU counts as that path's."""

    name: str
    urls: list[str]
    headers: dict[str, str]
    pids: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Run:
    """One path at one level in one round (times in ms)."""

    ttft: list[float] = field(default_factory=list)  # request sent -> first token at the client
    total: list[float] = field(default_factory=list)  # request sent -> end of the stream
    lag: list[float] = field(default_factory=list)  # every token: at the client - sent by the provider
    errors: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    wall_s: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per call, by process group

    def figures(self) -> dict[str, float | None]:
        return {
            "rps": self.calls / self.wall_s if self.wall_s else None,
            "ttft_p50": pct(self.ttft, 0.5),
            "ttft_p99": pct(self.ttft, 0.99),
            "total_p50": pct(self.total, 0.5),
            "lag_p50": pct(self.lag, 0.5),
            "lag_p99": pct(self.lag, 0.99),
            "lag_max": max(self.lag) if self.lag else None,
        }


async def one_call(slot: ConnectionSlot, headers: dict[str, str], run: Run) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}).encode()
    first: list[float] = []
    failed = [False]

    def on_event(now: float, wall: float, event: str, data: bytes) -> bool:
        if event == "error" or data.startswith(b'{"error"'):
            failed[0] = True
            return True
        sent = stamps(data)
        if sent:
            if not first:
                first.append(now)
            run.lag.extend(wall * 1000 - us / 1000 for us in sent)
        return False

    t0 = time.perf_counter()
    try:
        conn = await slot.get()
        t0 = time.perf_counter()
        status, _ = await asyncio.wait_for(conn.request("POST", slot.path, headers, body, on_event), 60)
    except (OSError, TimeoutError) as err:
        slot.close()
        run.errors[type(err).__name__] += 1
        return
    if status != 200 or failed[0] or not first:
        run.errors[f"HTTP {status}" if status != 200 else "error in stream"] += 1
        return
    run.ttft.append((first[0] - t0) * 1000)
    run.total.append((time.perf_counter() - t0) * 1000)
    run.calls += 1


def group_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                total += cpu_seconds(proc) + sum(cpu_seconds(c) for c in proc.children(recursive=True))
        out[name] = total
    return out


async def run_path(
    target: Target, slots: list[ConnectionSlot], calls_each: int, ramp_s: float, until: float | None = None
) -> Run:
    """Every worker (one slot each) makes `calls_each` calls back to back (or calls until `until`); starts spread
    over `ramp_s`, as independent users would be."""
    run = Run()

    async def worker(i: int, slot: ConnectionSlot) -> None:
        await asyncio.sleep(ramp_s * i / len(slots))
        n = 0
        while (n < calls_each) if until is None else (time.perf_counter() < until):
            await one_call(slot, target.headers, run)
            n += 1

    cpu0 = group_cpu(target.pids)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, s) for i, s in enumerate(slots)))
    run.wall_s = time.perf_counter() - t0
    cpu1 = group_cpu(target.pids)
    run.cpu_ms = {k: (cpu1[k] - cpu0[k]) * 1000 / max(1, run.calls) for k in cpu0}
    return run


async def settle(target: Target, idle_pct: float = 20.0, max_s: float = 60.0) -> None:
    """Wait until the path's processes are nearly idle (a proxy may work on calls its clients gave up on long
    after they ended): the next path's run must not pay for this one."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = group_cpu(target.pids)
        await asyncio.sleep(0.5)
        after = group_cpu(target.pids)
        if all((after[k] - before[k]) * 200 < idle_pct for k in before):
            return


def open_slots(target: Target, n: int) -> list[ConnectionSlot]:
    return [ConnectionSlot(target.urls[i % len(target.urls)] + "/v1/chat/completions") for i in range(n)]


# ---- LiteLLM, from a virtual environment of its own -------------------------------------------------------------
def litellm_venv() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"creating {LITELLM_VENV} and installing litellm[proxy] (first use)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"]
        subprocess.run(pip, check=True)
    return exe


class LiteLLMProcess:
    """A LiteLLM proxy (no database, no callbacks) with one model: the fake provider."""

    def __init__(self, provider_url: str, workers: int, log_dir: Path) -> None:
        exe = litellm_venv()
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        cfg = log_dir / "litellm.json"  # YAML is a superset of JSON
        model = {"model": f"openai/{MODEL}", "api_base": provider_url + "/v1", "api_key": "bench-dummy"}
        settings = {"master_key": LITELLM_KEY}  # it refuses to start without one
        cfg.write_text(
            json.dumps({"model_list": [{"model_name": MODEL, "litellm_params": model}], "general_settings": settings})
        )
        args = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--num_workers", str(workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADP_", "DATABASE_URL"))}
        # the bundled model price map: fetching it (no internet here) blocks a starting worker past uvicorn's check
        env.update({"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "DISABLE_ADMIN_UI": "True"})
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        with open(log_dir / "litellm.log", "ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait(self) -> None:
        task = asyncio.create_task(wait_http(self.url + "/health/liveliness", timeout=300))
        while not task.done():
            if self.popen.poll() is not None:
                task.cancel()
                raise RuntimeError(f"LiteLLM exited with {self.popen.returncode} (see litellm.log)")
            await asyncio.sleep(0.2)
        task.result()

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, 15)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait(5)


# ---- the table --------------------------------------------------------------------------------------------------
def added(rounds: list[dict[str, Run]], path: str, key: str) -> float | None:
    """Median over the rounds of (path - direct in the same round)."""
    vals = []
    for r in rounds:
        a, b = r[path].figures()[key], r["direct"].figures()[key]
        if a is not None and b is not None:
            vals.append(a - b)
    return statistics.median(vals) if vals else None


def rps_ratio(rounds: list[dict[str, Run]], path: str) -> float | None:
    vals = []
    for r in rounds:
        a, b = r[path].figures()["rps"], r["direct"].figures()["rps"]
        if a and b:
            vals.append(a / b)
    return statistics.median(vals) if vals else None


def median_of(rounds: list[dict[str, Run]], path: str, key: str) -> float | None:
    vals = [v for r in rounds if (v := r[path].figures()[key]) is not None]
    return statistics.median(vals) if vals else None


def row_for(level: int, rounds: list[dict[str, Run]], path: str) -> dict[str, Any]:
    row: dict[str, Any] = {"streams": level, "path": path, "rps": median_of(rounds, path, "rps")}
    kinds = sum((r[path].errors for r in rounds), Counter[str]())
    row["errors"], row["error_kinds"] = sum(kinds.values()), dict(kinds)
    row["calls"] = sum(r[path].calls for r in rounds)
    for key in ("ttft_p50", "ttft_p99", "total_p50", "lag_p50", "lag_p99", "lag_max"):
        row[key] = median_of(rounds, path, key)
        if path != "direct":
            row[f"added_{key}"] = added(rounds, path, key)
    if path != "direct":
        row["rps_ratio"] = rps_ratio(rounds, path)
    cpu: dict[str, list[float]] = {}
    for r in rounds:
        for name, ms in r[path].cpu_ms.items():
            cpu.setdefault(name, []).append(ms)
    row["cpu_ms_per_call"] = {k: round(statistics.median(v), 2) for k, v in cpu.items()}
    return row


def f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if v is None else fmt.format(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| streams | path | req/s | × direct | added TTFT p50 / p99 ms | added total p50 ms "
        "| added token delay p50 / p99 ms | token delay max ms | errors | CPU ms per call |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        direct = r["path"] == "direct"
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_call"].items())
        ttft = (
            f"{f(r['ttft_p50'])} / {f(r['ttft_p99'])} (abs)"
            if direct
            else f"{f(r['added_ttft_p50'], '{:+.1f}')} / {f(r['added_ttft_p99'], '{:+.1f}')}"
        )
        total = f"{f(r['total_p50'])} (abs)" if direct else f(r["added_total_p50"], "{:+.1f}")
        lag = (
            f"{f(r['lag_p50'])} / {f(r['lag_p99'])} (abs)"
            if direct
            else f"{f(r['added_lag_p50'], '{:+.1f}')} / {f(r['added_lag_p99'], '{:+.1f}')}"
        )
        ratio = "1" if direct else f(r.get("rps_ratio"), "{:.2f}")
        print(
            f"| {r['streams']} | {r['path']} | {f(r['rps'], '{:.0f}')} | {ratio} | {ttft} | {total} | {lag} "
            f"| {f(r['lag_max'])} | {r['errors']} | {cpu} |"
        )
    for r in rows:
        if r["errors"]:
            print(f"errors at {r['streams']} streams, {r['path']}: {r['error_kinds']}")


# ---- orchestration ----------------------------------------------------------------------------------------------
async def measure_level(
    targets: list[Target], level: int, args: argparse.Namespace, call_s: float
) -> list[dict[str, Run]]:
    calls_each = max(args.calls_per_stream, -(-args.min_calls // level))
    slots = {t.name: open_slots(t, level) for t in targets}
    try:
        for t in targets:  # warm-up: every connection opened, every process past its first calls
            await run_path(t, slots[t.name], 1, 0.0)
            await settle(t)
        rounds: list[dict[str, Run]] = []
        for k in range(args.repeat):
            order = targets[k % len(targets) :] + targets[: k % len(targets)]
            runs: dict[str, Run] = {}
            for t in order:
                runs[t.name] = await run_path(t, slots[t.name], calls_each, call_s)
                await settle(t)
            rounds.append(runs)
            summary = "  ".join(
                f"{n} {f(r.figures()['rps'], '{:.0f}')}/s ttft50 {f(r.figures()['ttft_p50'])}" for n, r in runs.items()
            )
            print(f"  streams {level} round {k + 1}: {summary}", flush=True)
        return rounds
    finally:
        for group in slots.values():
            for s in group:
                s.close()


async def profile(target: Target, level: int, args: argparse.Namespace, out_dir: Path, call_s: float) -> None:
    """Sample the platform's processes with py-spy while `level` streams run for `--profile-s` seconds."""
    pids = {f"{name}-{i}": pid for name, group in target.pids.items() for i, pid in enumerate(group)}
    spy = PySpy(args.py_spy, out_dir, f"peer-{level}", pids, args.profile_s)
    slots = open_slots(target, level)
    try:
        await run_path(target, slots, 1, 0.0)
        spy.start()
        await asyncio.sleep(0.5)
        run = await run_path(target, slots, 0, call_s, until=time.perf_counter() + args.profile_s - 1)
        tops = await spy.stop()
    finally:
        for s in slots:
            s.close()
    print(f"\nprofile at {level} streams ({run.calls} calls, CPU ms per call {run.cpu_ms}); raw stacks in {out_dir}")
    for name, top in tops.items():
        print(f"  {name} self: " + ", ".join(f"{fn} {share:.1f}%" for fn, share in top["self"][:10]))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,50,200")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per level (each path once a round)")
    ap.add_argument("--calls-per-stream", type=int, default=4)
    ap.add_argument("--min-calls", type=int, default=60, help="at least this many calls per path, level and round")
    ap.add_argument("--ttft-ms", type=float, default=20.0)
    ap.add_argument("--token-interval-ms", type=float, default=5.0)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--replicas", default="", help="platform copies, e.g. router=2,gateway=2 (default one each)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="platform env (repeatable)")
    ap.add_argument("--litellm", action="store_true", help="also through a LiteLLM proxy")
    ap.add_argument("--litellm-workers", type=int, default=2)
    ap.add_argument("--no-platform", action="store_true", help="direct (and LiteLLM) only")
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy executable: profile gateway and router afterwards")
    ap.add_argument("--profile-level", type=int, default=50)
    ap.add_argument("--profile-s", type=int, default=10)
    ap.add_argument("--nats", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--pg", default=os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis", default=os.environ.get("ADP_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    out_dir = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = out_dir / "logs" / f"peer-{stamp}"
    call_s = (args.ttft_ms + args.token_interval_ms * (args.tokens - 1)) / 1000
    provider = FakeProviderProcess(
        ttft_ms=args.ttft_ms,
        tokens_per_s=1000 / args.token_interval_ms,
        tokens=args.tokens,
        jitter=0.0,
        log=log_dir / "provider.log",
        stamp_every=1,
    )
    platform: Platform | None = None
    litellm: LiteLLMProcess | None = None
    try:
        await provider.wait()
        targets = [Target("direct", [provider.url], {}, {"provider": [provider.popen.pid]})]
        if not args.no_platform:
            env = dict(kv.split("=", 1) for kv in args.env)
            env.setdefault("ADP_LOG_LEVEL", "WARNING")
            replicas = parse_replicas(args.replicas)
            platform = Platform(args.nats, args.pg, args.redis, provider.url, replicas, log_dir, 64, env)
            await platform.start()
            gw = [p for p in platform.procs if p.service == "gateway"]
            router = [p for p in platform.procs if p.service == "llm-router"]
            cost = [p for p in platform.procs if p.service == "cost"]  # charges each call's usage record
            pids = {
                name: [p.popen.pid for p in group]
                for name, group in (("gateway", gw), ("router", router), ("cost", cost))
            }
            targets.append(Target("platform", [p.url for p in gw], {"Authorization": f"Bearer {ADMIN_KEY}"}, pids))
        if args.litellm:
            litellm = LiteLLMProcess(provider.url, args.litellm_workers, log_dir)
            await litellm.wait()
            auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
            targets.append(Target("litellm", [litellm.url], auth, {"litellm": [litellm.popen.pid]}))
        rows: list[dict[str, Any]] = []
        for level in levels:
            rounds = await measure_level(targets, level, args, call_s)
            rows += [row_for(level, rounds, t.name) for t in targets]
        print(
            f"\nprovider: TTFT {args.ttft_ms:g} ms, {args.tokens} tokens {args.token_interval_ms:g} ms apart; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; median of {args.repeat} rounds, "
            "each path against direct in the same round; CPU per call: the path's own processes"
        )
        print_table(rows)
        if args.py_spy and platform is not None:
            await profile(targets[1], args.profile_level, args, log_dir, call_s)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"peer-bench-{stamp}.json"
        out.write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        print(f"\nwritten to {out}")
    finally:
        if litellm is not None:
            litellm.stop()
        if platform is not None:
            await platform.stop()
        provider.stop()


if __name__ == "__main__":
    run_loop(main())
