"""Client side of the load benchmark: discussions through the gateway (REST + SSE), the same provider called
directly, and the OpenAI-compatible path. Every latency is measured here, at the client.

Event streams (the gateway's SSE, the provider's and the OpenAI-compatible streamed completions) go through
`sse_http` — a bare asyncio protocol that handles each read where it arrives and times events then; REST
calls through aiohttp. (With httpx the client itself had needed ~10x the CPU per stream and lagged behind
hundreds of streams, which showed up as platform latency; aiohttp streams still woke a task per read.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from adp_client import AsyncClient
from load.provider import arrival, stamps, token_count
from load.sse_http import ConnectionSlot, SSEConnection

TOPIC = "How should a small team roll out a new on-call rotation without burning people out?"


@dataclass
class Tally:
    """Everything one phase measured (lists are in milliseconds)."""

    ttfc: list[float] = field(default_factory=list)  # message-start -> first chunk (or request -> first token)
    chunk_lat: list[float] = field(default_factory=list)  # client receive time - provider emission time
    ttfc_turn1: list[float] = field(default_factory=list)  # first turn of a discussion (may be a replay)
    # TTFC split at the provider's stamp of the first token: message-start at the client -> token emitted
    # (dialogue, router and provider), and emitted -> at the client (router, NATS, gateway, client)
    ttfc_request: list[float] = field(default_factory=list)
    ttfc_delivery: list[float] = field(default_factory=list)
    # the request part split again where the provider had the whole request: message-start at the client ->
    # request at the provider (dialogue, NATS, router), and the provider's own wait (its TTFT, its loop's lag)
    ttfc_to_provider: list[float] = field(default_factory=list)
    ttfc_provider_wait: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)  # whole call / round
    rest: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    errors_detail: Counter[str] = field(default_factory=Counter)  # diagnostics that are not client errors
    chunks: int = 0
    turns: int = 0
    turns_missing_chunks: int = 0
    completed: int = 0
    first_chunk_t: float | None = None
    last_chunk_t: float | None = None
    # (perf_counter, what, ms) of every TTFC and REST sample, for the run's timeline
    samples: list[tuple[float, str, float]] = field(default_factory=list)
    # per measured turn: (message-start time, request ms, delivery ms) — the TTFC split, for the timeline
    ttfc_split: list[tuple[float, float, float]] = field(default_factory=list)

    def rest_time(self, name: str, ms: float) -> None:
        self.rest.setdefault(name, []).append(ms)
        self.samples.append((time.perf_counter(), name, ms))

    def saw_chunk(self, now: float, n: int) -> None:
        self.chunks += n
        if self.first_chunk_t is None:
            self.first_chunk_t = now
        self.last_chunk_t = now


def _add_latency(tally: Tally, data: bytes, now_wall: float) -> list[int]:
    """Record the delivery latency of every stamped token in `data`; their stamps."""
    ts = stamps(data)
    now_us = now_wall * 1e6
    tally.chunk_lat.extend((now_us - t) / 1000 for t in ts)
    return ts


ClientErrors = (aiohttp.ClientError, TimeoutError)


async def timed(tally: Tally, name: str, request: Any, ok: tuple[int, ...] = (200, 201)) -> Any | None:
    """Run one REST call (an aiohttp request context) and record its time; the parsed JSON body, or None
    on an error (counted)."""
    t0 = time.perf_counter()
    try:
        async with request as r:
            body = await r.read()
    except ClientErrors as err:
        tally.errors[f"{name}: {type(err).__name__}"] += 1
        return None
    tally.rest_time(name, (time.perf_counter() - t0) * 1000)
    if r.status not in ok:
        code = ""
        with contextlib.suppress(Exception):
            code = json.loads(body)["error"]["code"]
        tally.errors[f"{name}: HTTP {r.status} {code}".strip()] += 1
        return None
    return json.loads(body) if body else {}


# ---- users ---------------------------------------------------------------------------------------------------
async def create_users(gateway: str, admin_key: str, n: int, parallel: int = 16) -> list[str]:
    """n users with one API key each (one user per discussion keeps every per-user limit realistic); set-up
    through the typed client (adp_client), outside every measured window."""
    sem = asyncio.Semaphore(parallel)

    async def one(admin: AsyncClient, i: int) -> str:
        async with sem:
            uid = (await admin.create_user(f"bench-{i}"))["id"]
            return str((await admin.create_key(uid))["key"])

    async with AsyncClient(gateway, admin_key, timeout=60) as admin:
        return list(await asyncio.gather(*(one(admin, i) for i in range(n))))


# ---- phase A: discussions through the gateway ----------------------------------------------------------------
@dataclass
class DiscussionRun:
    """N users, each holding one discussion for `rounds` rounds: create, watch the SSE stream, POST proceed
    when a round completes (the stream stays open), stop after the last round (`end_proceed`: proceed, then
    stop at once — every user at the same moment, a stress case rather than a workload)."""

    http: aiohttp.ClientSession
    gateways: list[str]
    keys: list[str]
    tokens: int
    stream_timeout_s: float
    rest_rps: float
    rounds: int = 1
    end_proceed: bool = False
    tally: Tally = field(default_factory=Tally)
    live: dict[str, tuple[str, str]] = field(default_factory=dict)  # discussion id -> (gateway, key)
    peak_live: int = 0  # most discussions created and not yet through their last round at one time
    # the full-load window (perf_counter): from the moment every discussion is live until the first is through
    all_live_t: float | None = None
    first_done_t: float | None = None

    async def one(self, i: int, start_gate: asyncio.Event, delay_s: float = 0.0) -> None:
        gw = self.gateways[i % len(self.gateways)]
        key = self.keys[i]
        h = {"Authorization": f"Bearer {key}"}
        t = self.tally
        await start_gate.wait()
        if delay_s:
            await asyncio.sleep(delay_s)
        t0 = time.perf_counter()
        create = self.http.post(f"{gw}/api/discussions", json={"topic": TOPIC}, headers=h)
        r = await timed(t, "POST /api/discussions", create, ok=(201,))
        if r is None:
            return
        did = str(r["id"])
        self.live[did] = (gw, key)
        self.peak_live = max(self.peak_live, len(self.live))
        if self.all_live_t is None and len(self.live) == len(self.keys):
            self.all_live_t = time.perf_counter()
        try:
            done = await asyncio.wait_for(self._stream(gw, h, did), self.stream_timeout_s)
        except TimeoutError:
            t.errors["SSE: timeout before the last round-complete"] += 1
            done = False
        except (aiohttp.ClientError, OSError) as err:  # OSError: ConnectionError from the SSE connection
            t.errors[f"SSE: {type(err).__name__}"] += 1
            done = False
        finally:
            self.live.pop(did, None)
            if self.first_done_t is None:
                self.first_done_t = time.perf_counter()
        if done:
            t.completed += 1
            t.total.append((time.perf_counter() - t0) * 1000)
            if self.end_proceed:
                await timed(t, "POST …/proceed", self.http.post(f"{gw}/api/discussions/{did}/proceed", headers=h))
        await timed(t, "POST …/stop", self.http.post(f"{gw}/api/discussions/{did}/stop", headers=h))

    async def _proceed(self, gw: str, h: dict[str, str], did: str, conn: SSEConnection) -> None:
        """Between rounds, beside the open stream (its reading goes on meanwhile). If the call fails the
        next round never comes: the stream is closed, so the failure shows now rather than at the timeout."""
        call = self.http.post(f"{gw}/api/discussions/{did}/proceed", headers=h)
        if await timed(self.tally, "POST …/proceed", call) is None:
            conn.close()

    async def _stream(self, gw: str, h: dict[str, str], did: str) -> bool:
        """The discussion's event stream until its last round completes: True then, False on an error."""
        t = self.tally
        turn_start: float | None = None
        first_ms: float | None = None
        turn_chunks = turn_no = rounds_done = 0
        turn_first_stamp: int | None = None
        turn_last_stamp: int | None = None
        delivery_ms = 0.0
        provider_wait_ms: float | None = None
        outcome: bool | None = None
        proceeds: set[asyncio.Task[None]] = set()
        conn = await SSEConnection.open(gw)

        def on_event(now: float, wall: float, event: str, data: bytes) -> bool:
            nonlocal turn_start, first_ms, turn_chunks, turn_no, rounds_done, outcome
            nonlocal turn_first_stamp, turn_last_stamp, delivery_ms, provider_wait_ms
            if event == "message-chunk":
                got = _add_latency(t, data, wall)
                n = token_count(data)
                t.saw_chunk(now, n)
                if got:
                    turn_first_stamp = got[0] if turn_first_stamp is None else turn_first_stamp
                    turn_last_stamp = got[-1]
                if turn_chunks == 0 and got and turn_start is not None:
                    first_ms = (now - turn_start) * 1000
                    delivery_ms = (wall * 1e6 - got[0]) / 1000
                    arrived = arrival(data)
                    provider_wait_ms = None if arrived is None else (got[0] - arrived) / 1000
                turn_chunks += n
            elif event == "message-start":
                turn_start, turn_chunks, first_ms = now, 0, None
                turn_first_stamp = turn_last_stamp = None
                turn_no = int(json.loads(data).get("turn", 0))
            elif event == "message-complete":
                t.turns += 1
                if turn_chunks < self.tokens:
                    # which chunks were lost: compare with the stored text's stamps
                    stored = stamps(data)
                    if stored and turn_last_stamp is not None and turn_last_stamp < stored[-1]:
                        t.errors_detail["turns missing tail chunks"] += 1
                    if stored and turn_first_stamp is not None and turn_first_stamp > stored[0]:
                        t.errors_detail["turns missing head chunks"] += 1
                    if turn_chunks == 0:
                        t.errors_detail["turns with no chunk at all"] += 1
                    # chunks are live-only: those published before this stream subscribed are gone,
                    # so this turn's first received chunk was not the provider's first token
                    t.turns_missing_chunks += 1
                elif first_ms is not None:
                    # turn 1's message-start may be a replay (published before this stream subscribed),
                    # so its TTFC is kept apart; later turns start while the stream is surely live
                    (t.ttfc if turn_no > 1 else t.ttfc_turn1).append(first_ms)
                    if turn_no > 1:
                        t.samples.append((turn_start or now, "ttfc", first_ms))
                        request_ms = first_ms - delivery_ms
                        t.ttfc_request.append(request_ms)
                        t.ttfc_delivery.append(delivery_ms)
                        if provider_wait_ms is not None:
                            t.ttfc_provider_wait.append(provider_wait_ms)
                            t.ttfc_to_provider.append(request_ms - provider_wait_ms)
                        t.ttfc_split.append((turn_start or now, request_ms, delivery_ms))
                turn_start, first_ms = None, None
            elif event == "round-complete":
                rounds_done += 1
                if rounds_done >= self.rounds:
                    outcome = True
                    return True
                task = asyncio.create_task(self._proceed(gw, h, did, conn))
                proceeds.add(task)
                task.add_done_callback(proceeds.discard)
            elif event == "error":
                code = ""
                with contextlib.suppress(Exception):
                    code = json.loads(data).get("code", "")
                t.errors[f"SSE error event {code}"] += 1
                outcome = False
                return True
            return False

        try:
            status, _ = await conn.request("GET", f"/api/discussions/{did}/events", h, None, on_event)
        finally:
            conn.close()
        if status != 200:
            t.errors[f"SSE: HTTP {status}"] += 1
            return False
        if outcome:
            await asyncio.gather(*proceeds)
        elif outcome is None:
            t.errors["SSE: stream ended before the last round-complete"] += 1
        return bool(outcome)

    async def prober(self, stop: asyncio.Event) -> None:
        """REST calls at a steady rate against discussions that are streaming right now."""
        if self.rest_rps <= 0:
            return
        period = 1 / self.rest_rps
        tasks: set[asyncio.Task[Any]] = set()
        turn = 0
        while not stop.is_set():
            if self.live:
                did, (gw, key) = random.choice(list(self.live.items()))
                h = {"Authorization": f"Bearer {key}"}
                if turn % 2 == 0:
                    req = self.http.get(f"{gw}/api/discussions/{did}", headers=h)
                    coro = timed(self.tally, "GET /api/discussions/{id}", req)
                else:
                    coro = timed(self.tally, "GET /api/discussions", self.http.get(f"{gw}/api/discussions", headers=h))
                task = asyncio.create_task(coro)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                turn += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self, n: int, ramp_s: float = 0.0) -> float:
        """n discussions; discussion i starts i/n of `ramp_s` after the first (0: all at once)."""
        gate = asyncio.Event()
        stop = asyncio.Event()
        clients = [asyncio.create_task(self.one(i, gate, ramp_s * i / n)) for i in range(n)]
        probe = asyncio.create_task(self.prober(stop))
        t0 = time.perf_counter()
        gate.set()
        await asyncio.gather(*clients)
        wall = time.perf_counter() - t0
        stop.set()
        await probe
        return wall


# ---- the same provider, called directly ----------------------------------------------------------------------
async def stream_completion(
    slot: ConnectionSlot,
    headers: dict[str, str],
    model: str,
    tally: Tally,
    max_tokens: int | None = None,
    timeout_s: float = 120.0,
) -> bool:
    """One streamed chat completion on the slot's connection; TTFT = request sent -> first token (always
    stamped)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": TOPIC}], "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    got = 0
    failed = False

    def on_event(now: float, wall: float, event: str, data: bytes) -> bool:
        nonlocal got, failed
        if event == "error" or data.startswith(b'{"error"'):
            failed = True
            return True
        _add_latency(tally, data, wall)
        n = token_count(data)
        if n:
            if got == 0:
                tally.ttfc.append((now - t0) * 1000)
                tally.samples.append((t0, "ttft", (now - t0) * 1000))
            got += n
            tally.saw_chunk(now, n)
        return False

    try:
        conn = await slot.get()
        t0 = time.perf_counter()
        call = conn.request("POST", slot.path, headers, json.dumps(body).encode(), on_event)
        status, _ = await asyncio.wait_for(call, timeout_s)
    except (OSError, TimeoutError) as err:
        slot.close()
        tally.errors[type(err).__name__] += 1
        return False
    if status != 200:
        tally.errors[f"HTTP {status}"] += 1
        return False
    if failed:
        tally.errors["error in stream"] += 1
        return False
    tally.total.append((time.perf_counter() - t0) * 1000)
    tally.turns += 1
    return True


async def run_streams(
    url: str,
    headers: dict[str, str],
    model: str,
    concurrency: int,
    per_worker: int,
    tally: Tally,
    ramp_s: float = 0.0,
) -> float:
    """`concurrency` workers, each making `per_worker` streamed calls to `url` one after another on its own
    keep-alive connection; starts spread over `ramp_s`."""

    async def worker(i: int) -> None:
        await asyncio.sleep(ramp_s * i / concurrency)
        slot = ConnectionSlot(url)
        try:
            for _ in range(per_worker):
                await stream_completion(slot, headers, model, tally)
        finally:
            slot.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return time.perf_counter() - t0


async def direct_control(url: str, workers: int, tally: Tally, stop: asyncio.Event) -> None:
    """A baseline taken at the same time as the gateway phase: `workers` loops of one-token streamed calls
    straight to the provider. Their TTFT carries what the machine's load does to the provider and to this
    client (both share the cores with the platform here; in production they would not), so TTFC minus it
    is what the platform's own hops add. One token keeps the control's own load small."""

    async def worker() -> None:
        await asyncio.sleep(random.uniform(0, 0.3))
        slot = ConnectionSlot(url)
        try:
            while not stop.is_set():
                await stream_completion(slot, {}, "fake-model", tally, max_tokens=1)
                await asyncio.sleep(random.uniform(0.0, 0.1))
        finally:
            slot.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
