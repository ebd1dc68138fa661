"""Per-message overhead of raw nats-py vs our thin `Bus` vs FastStream's `NatsBroker`.

Two paths, same pydantic models for every implementation:

1. request/reply: sequential round-trip latency (p50/p99) and throughput with `--concurrency` requesters;
2. chunk relay: a producer publishes small chunk messages to subject A, a relay (the implementation under
   test) parses each into a pydantic model and republishes it to subject B, a sink measures per-chunk
   end-to-end latency (one chunk in flight, or paced at `--rate` chunks/s) and the relay's capacity
   (chunks/s, unpaced burst).

The responder and the relay of each implementation run in their own child process (as a service would);
the requesters of the implementation under test, the chunk producer and the sink (plain nats-py for every
implementation) run in this process. All implementations are measured in the same run, `--reps` times,
in a rotating order; the median of the repetitions is reported, with ratios vs raw nats-py.

    .venv/bin/python bench/bus_bench.py [--n 5000] [--json bench-results/bus.json] [--nats-url ...]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import statistics
import sys
import time
import tokenize
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
BUS_PACKAGE = ROOT / "libs/common/src/adp_common/bus"

IMPLS = ("raw", "bus", "faststream", "faststream+otel")
DESCRIPTIONS = {
    "raw": "nats-py: nc.request / subscribe + msg.respond, pydantic by hand",
    "bus": "adp_common.bus.Bus: request(response_model=) / serve() (nats.micro endpoint) / subscribe+publish",
    "faststream": "FastStream NatsBroker: broker.request / @subscriber(model) -> model / @publisher relay",
    "faststream+otel": "same, with NatsTelemetryMiddleware (trace context in headers, as Bus does)",
}


# ---- the shared models ------------------------------------------------------------------------------------
class AskRequest(BaseModel):
    request_id: str
    discussion_id: str
    text: str
    max_tokens: int = 256


class AskResponse(BaseModel):
    request_id: str
    tokens: int
    text: str


class Chunk(BaseModel):
    request_id: str
    seq: int
    delta: str
    t: int = 0  # perf_counter_ns at publish (CLOCK_MONOTONIC, comparable across processes)


def answer(req: AskRequest) -> AskResponse:
    return AskResponse(request_id=req.request_id, tokens=len(req.text.split()), text=req.text[:32])


def make_request(i: int) -> AskRequest:
    return AskRequest(request_id=f"r{i}", discussion_id="d-0001", text="how many words are in this sentence")


# ---- servers (child process): responder on <prefix>.rr, relay <prefix>.a -> <prefix>.b --------------------
async def serve_raw(url: str, prefix: str) -> Callable[[], Awaitable[None]]:
    nc = NATS()
    await nc.connect(url, name="bench-raw-server")

    async def on_request(msg: Msg) -> None:
        req = AskRequest.model_validate_json(msg.data)
        await msg.respond(answer(req).model_dump_json().encode())

    async def on_chunk(msg: Msg) -> None:
        chunk = Chunk.model_validate_json(msg.data)
        await nc.publish(f"{prefix}.b", chunk.model_dump_json().encode())

    await nc.subscribe(f"{prefix}.rr", queue="bench", cb=on_request)
    await nc.subscribe(f"{prefix}.a", cb=on_chunk)
    await nc.flush()
    return nc.drain


async def serve_bus(url: str, prefix: str) -> Callable[[], Awaitable[None]]:
    from adp_common.bus import Bus, RequestContext

    bus = await Bus.connect(url, prefix=prefix, name="busbench", instance="server")

    async def on_request(req: AskRequest, _ctx: RequestContext) -> AskResponse:
        return answer(req)

    async def on_chunk(msg: Msg) -> None:
        chunk = Chunk.model_validate_json(msg.data)
        await bus.publish(f"{prefix}.b", chunk)

    await bus.serve(f"{prefix}.rr", on_request, AskRequest, name="ask")
    await bus.subscribe(f"{prefix}.a", on_chunk)
    await bus.nc.flush()
    return bus.close


def _faststream_broker(url: str, otel: bool, name: str) -> Any:
    from faststream.nats import NatsBroker

    middlewares: list[Any] = []
    if otel:
        from faststream.nats.opentelemetry import NatsTelemetryMiddleware

        middlewares.append(NatsTelemetryMiddleware())
    # logger=None: FastStream otherwise logs every message at INFO, which no service would keep on.
    return NatsBroker(url, name=name, logger=None, middlewares=middlewares)


async def serve_faststream(url: str, prefix: str, otel: bool) -> Callable[[], Awaitable[None]]:
    broker = _faststream_broker(url, otel, "bench-faststream-server")

    @broker.subscriber(f"{prefix}.rr", queue="bench")
    async def on_request(req: AskRequest) -> AskResponse:
        return answer(req)

    @broker.subscriber(f"{prefix}.a")
    @broker.publisher(f"{prefix}.b")
    async def on_chunk(chunk: Chunk) -> Chunk:
        return chunk

    await broker.start()
    return broker.stop


async def run_server(impl: str, url: str, prefix: str) -> None:
    if impl == "raw":
        stop = await serve_raw(url, prefix)
    elif impl == "bus":
        stop = await serve_bus(url, prefix)
    else:
        stop = await serve_faststream(url, prefix, otel=impl == "faststream+otel")
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us
    with contextlib.suppress(Exception):
        await asyncio.wait_for(stop(), timeout=5)


# ---- clients (this process) -------------------------------------------------------------------------------
Requester = Callable[[AskRequest], Awaitable[AskResponse]]


class Client:
    """The requester side of one implementation, plus a plain nats-py connection for producer and sink."""

    def __init__(self, impl: str, url: str, prefix: str) -> None:
        self.impl, self.url, self.prefix = impl, url, prefix
        self.request: Requester
        self._close: list[Callable[[], Awaitable[Any]]] = []
        self.nc = NATS()

    async def start(self) -> None:
        await self.nc.connect(self.url, name=f"bench-{self.impl}-producer", pending_size=64 * 1024 * 1024)
        self._close.append(self.nc.drain)
        subject = f"{self.prefix}.rr"
        if self.impl == "raw":
            nc = NATS()
            await nc.connect(self.url, name="bench-raw-client")
            self._close.append(nc.drain)

            async def request(req: AskRequest) -> AskResponse:
                msg = await nc.request(subject, req.model_dump_json().encode(), timeout=10)
                return AskResponse.model_validate_json(msg.data)

        elif self.impl == "bus":
            from adp_common.bus import Bus

            bus = await Bus.connect(self.url, prefix=self.prefix, name="busbench-client")
            self._close.append(bus.close)

            async def request(req: AskRequest) -> AskResponse:
                return await bus.request(subject, req, response_model=AskResponse, timeout=10)

        else:
            broker = _faststream_broker(self.url, self.impl == "faststream+otel", "bench-faststream-client")
            await broker.start()
            self._close.append(broker.stop)

            async def request(req: AskRequest) -> AskResponse:
                msg = await broker.request(req, subject, timeout=10)
                return AskResponse.model_validate_json(msg.body)

        self.request = request

    async def close(self) -> None:
        for close in reversed(self._close):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(close(), timeout=5)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def rr_sequential(c: Client, n: int) -> dict[str, float]:
    lat: list[float] = []
    for i in range(n):
        req = make_request(i)
        t0 = time.perf_counter_ns()
        resp = await c.request(req)
        lat.append((time.perf_counter_ns() - t0) / 1000)
        assert resp.request_id == req.request_id
    return {"p50_us": pct(lat, 0.50), "p99_us": pct(lat, 0.99)}


async def rr_throughput(c: Client, n: int, concurrency: int) -> dict[str, float]:
    per = max(1, n // concurrency)

    async def worker(w: int) -> None:
        for i in range(per):
            await c.request(make_request(w * per + i))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return {"req_per_s": per * concurrency / (time.perf_counter() - t0)}


async def relay(c: Client, n: int, tag: str, rate: float | None = None) -> dict[str, float]:
    """Publish n chunks to A; the sink on B records each chunk's end-to-end latency.

    rate None: as fast as possible (the relay's capacity); rate 0: one chunk in flight at a time (the
    per-hop latency, free of queueing); rate > 0: paced at `rate` chunks/s (latency under that load)."""
    lat: list[float] = []
    done = asyncio.Event()
    arrived = asyncio.Event()
    last_ns = 0

    async def sink(msg: Msg) -> None:
        nonlocal last_ns
        now = time.perf_counter_ns()
        chunk = json.loads(msg.data)
        if chunk["request_id"] != tag:
            return  # a straggler from an earlier phase
        lat.append((now - chunk["t"]) / 1000)
        last_ns = now
        arrived.set()
        if len(lat) >= n:
            done.set()

    sub = await c.nc.subscribe(f"{c.prefix}.b", cb=sink, pending_msgs_limit=1_000_000)
    await c.nc.flush()
    subject = f"{c.prefix}.a"
    t0 = time.perf_counter_ns()
    step = 1e9 / rate if rate else 0.0
    for i in range(n):
        if rate:
            delay = (t0 + i * step - time.perf_counter_ns()) / 1e9
            if delay > 0.0005:
                await asyncio.sleep(delay)
        # a ~45-byte chunk like the dialogue's token stream, plus the timestamp
        data = Chunk(request_id=tag, seq=i, delta="word ", t=time.perf_counter_ns()).model_dump_json().encode()
        await c.nc.publish(subject, data)
        if rate == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout=5)
            arrived.clear()
    try:
        await asyncio.wait_for(done.wait(), timeout=30 + n / 500)
    except TimeoutError:
        print(f"  ! {c.impl} relay {tag}: got {len(lat)}/{n} chunks", file=sys.stderr)
    await sub.unsubscribe()
    if not lat:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "chunks_per_s": 0.0}
    return {"p50_us": pct(lat, 0.50), "p99_us": pct(lat, 0.99), "chunks_per_s": len(lat) * 1e9 / (last_ns - t0)}


async def measure(c: Client, args: argparse.Namespace, rep: int) -> dict[str, float]:
    seq = await rr_sequential(c, args.n)
    tput = await rr_throughput(c, args.n, args.concurrency)
    hop = await relay(c, max(1, args.n // 2), f"hop{rep}", rate=args.rate)  # N/2: keeps the run near 2 min
    burst = await relay(c, args.n, f"burst{rep}")
    return {
        "rr_p50_us": seq["p50_us"],
        "rr_p99_us": seq["p99_us"],
        "rr_req_per_s": tput["req_per_s"],
        "relay_p50_us": hop["p50_us"],
        "relay_p99_us": hop["p99_us"],
        "relay_chunks_per_s": burst["chunks_per_s"],
    }


async def warm_up(c: Client) -> None:
    for i in range(200):
        await c.request(make_request(i))
    await relay(c, 300, "warmup")


# ---- orchestration ----------------------------------------------------------------------------------------
async def start_server(impl: str, url: str, prefix: str, tracing: bool) -> asyncio.subprocess.Process:
    cmd = [sys.executable, __file__, "--serve", impl, "--prefix", prefix, "--nats-url", url]
    if tracing:
        cmd.append("--tracing")
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    if line.strip() != b"READY":
        raise RuntimeError(f"{impl} server did not start")
    return proc


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


METRICS = (
    # key, label, higher is better
    ("rr_p50_us", "req/reply p50 µs", False),
    ("rr_p99_us", "req/reply p99 µs", False),
    ("rr_req_per_s", "req/reply req/s (x{c})", True),
    ("relay_p50_us", "relay hop p50 µs ({r})", False),
    ("relay_p99_us", "relay hop p99 µs ({r})", False),
    ("relay_chunks_per_s", "relay chunks/s (burst)", True),
)


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    prefixes = {impl: f"busbench.{run_id}.{impl.replace('+', '-')}" for impl in IMPLS}
    servers: dict[str, asyncio.subprocess.Process] = {}
    clients: dict[str, Client] = {}
    runs: dict[str, list[dict[str, float]]] = {impl: [] for impl in IMPLS}
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        for impl in IMPLS:
            servers[impl] = await start_server(impl, args.nats_url, prefixes[impl], args.tracing)
            clients[impl] = Client(impl, args.nats_url, prefixes[impl])
            await clients[impl].start()
            await warm_up(clients[impl])
        for rep in range(args.reps):
            order = IMPLS[rep % len(IMPLS) :] + IMPLS[: rep % len(IMPLS)]  # rotate: no impl always goes first
            for impl in order:
                t0 = time.perf_counter()
                runs[impl].append(await measure(clients[impl], args, rep))
                print(f"  rep {rep + 1}/{args.reps} {impl:<16} {time.perf_counter() - t0:5.1f}s", file=sys.stderr)
    finally:
        for c in clients.values():
            await c.close()
        for proc in servers.values():
            await stop_server(proc)
    medians = {impl: {k: statistics.median(r[k] for r in runs[impl]) for k, _, _ in METRICS} for impl in IMPLS}
    ratios = {impl: {k: medians[impl][k] / medians["raw"][k] for k, _, _ in METRICS} for impl in IMPLS}
    return {
        "meta": {
            "n": args.n,
            "reps": args.reps,
            "concurrency": args.concurrency,
            "relay_rate_per_s": args.rate,
            "tracing_sdk": args.tracing,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # machine is shared: noise
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "versions": {p: importlib.metadata.version(p) for p in ("nats-py", "faststream", "pydantic")},
            "implementations": DESCRIPTIONS,
        },
        "median": medians,
        "ratio_vs_raw": ratios,
        "runs": runs,
        "loc": {path.stem: count_loc(path) for path in sorted(BUS_PACKAGE.glob("*.py"))},
    }


# ---- lines of code ----------------------------------------------------------------------------------------
def count_loc(path: Path) -> int:
    """Non-blank, non-comment, non-docstring lines of one module."""
    src = path.read_text()
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                doc_lines.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(code_lines - doc_lines)


# ---- output -----------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    meta, med, ratio = result["meta"], result["median"], result["ratio_vs_raw"]
    rate = meta["relay_rate_per_s"]
    r = f"@{rate}/s, N/2" if rate else "1 in flight, N/2"
    labels = [label.format(c=meta["concurrency"], r=r) for _, label, _ in METRICS]
    out = [
        f"N={meta['n']}, median of {meta['reps']} runs, tracing SDK {'on' if meta['tracing_sdk'] else 'off'}; "
        f"nats-py {meta['versions']['nats-py']}, faststream {meta['versions']['faststream']}, "
        f"pydantic {meta['versions']['pydantic']}, Python {meta['python']}, {meta['cpus']} CPUs; "
        f"{meta['elapsed_s']} s, 1-min load {meta['loadavg_1m'][0]} -> {meta['loadavg_1m'][1]}",
        "",
        "| metric | " + " | ".join(IMPLS) + " |",
        "|---|" + "---:|" * len(IMPLS),
    ]
    for (key, _, _), label in zip(METRICS, labels, strict=True):
        cells = []
        for impl in IMPLS:
            v = med[impl][key]
            cells.append(f"{v:,.0f}" if impl == "raw" else f"{v:,.0f} ({ratio[impl][key]:.2f}×)")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    extra = ["", "Per-message overhead over raw nats-py (p50, µs):", ""]
    for impl in IMPLS[1:]:
        rr = med[impl]["rr_p50_us"] - med["raw"]["rr_p50_us"]
        rl = med[impl]["relay_p50_us"] - med["raw"]["relay_p50_us"]
        extra.append(f"- {impl}: request/reply {rr:+.0f} µs, relay hop {rl:+.0f} µs")
    loc = result["loc"]
    extra += ["", f"adp_common.bus code lines (no blanks, comments, docstrings): {sum(loc.values())}"]
    extra += [f"- {module}: {lines}" for module, lines in loc.items()]
    return "\n".join(out + extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="requests / chunks per measurement (default 5000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported (default 3)")
    ap.add_argument("--concurrency", type=int, default=50, help="concurrent requesters for req/s (default 50)")
    ap.add_argument(
        "--rate", type=int, default=0, help="relay latency: 0 = one chunk in flight (default), N = paced at N/s"
    )
    ap.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--tracing", action="store_true", help="install the OpenTelemetry SDK (no exporter) everywhere")
    ap.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.tracing:
        from adp_common.telemetry import setup_tracing

        setup_tracing("busbench-server" if args.serve else "busbench")
    if args.serve:
        asyncio.run(run_server(args.serve, args.nats_url, args.prefix))
        return
    result = asyncio.run(run_bench(args))
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
