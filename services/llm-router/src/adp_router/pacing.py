"""Chunk pacing of streamed answers: the coalescing window (`chunk_interval_s`), one clock for every stream of
this copy (`FlushTicker`) and the per-call publisher of chunks (`ChunkEmitter`).

Hot path per streamed token: one string format and one core-NATS publish (buffered by the client)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from adp_common.bus import send_now

log = logging.getLogger("adp.router")


def chunk_interval_s(
    streams: int,
    base_ms: float,
    max_ms: float,
    busy_streams: int,
    lag_ms: float = 0.0,
    overload_lag_ms: float = 0.0,
    overload_max_ms: float = 0.0,
) -> float:
    """Coalescing window (the flush tick): `base_ms` while this copy carries at most `busy_streams`
    streams, then growing with the square of the load up to `max_ms`. The chunk messages a copy sends per
    second (streams ÷ window) thus peak at `busy_streams` streams and fall as the load grows beyond: under
    load, fewer and larger chunks keep the per-message cost downstream (NATS, gateway, clients) from growing
    with every token, while at a moderate load text still flows within a few tens of milliseconds (and the
    end of a short answer is not held for long: a stream's body is read at its tick). The first token is
    never held back.

    When the copy's event loop lags by more than `overload_lag_ms` (the machine is short of CPU, whatever the
    stream count), the window grows further in proportion to the lag, up to `overload_max_ms`: the text
    arrives in coarser pieces so that first tokens and requests, which wait in the same queues, do not."""
    if streams <= busy_streams or max_ms <= base_ms:
        ms = base_ms
    else:
        ms = min(max_ms, base_ms * (streams / busy_streams) ** 2)
    if 0 < overload_lag_ms < lag_ms and overload_max_ms > ms:
        ms = min(overload_max_ms, ms * lag_ms / overload_lag_ms)
    return ms / 1000


class FlushTicker:
    """One clock for every coalescing `ChunkEmitter` of this copy. Each stream gets a tick once per period:
    - the tick flushes the stream's emitter if it holds tokens (`add`); the emitters of one tick leave in one
      loop iteration — one NATS socket write — instead of one timer, task and write per stream and interval;
    - it wakes the stream's reader if it is paced (`next_tick`): one read then takes every token that
      arrived meanwhile, so the per-token work in the router (task wake-up, parsing layers) happens once
      per tick.
    Streams are dealt round-robin over `slots` ticks spread evenly across the period, so a period's work
    comes in small bursts (a first token arriving meanwhile waits for one slot, not for every stream).
    `period()` is read at every tick (it grows with the load, see `chunk_interval_s`). Ticks never come
    closer than `min_tick_s`: when the period is short (little load) one wake-up serves several slots, so
    many slots — small bursts under load — cost no extra wake-ups when the copy is nearly idle."""

    def __init__(self, period: Callable[[], float], slots: int = 8, min_tick_s: float = 0.0025) -> None:
        self.period = period
        self.slots = slots
        self.min_tick_s = min_tick_s
        self.waiting: list[dict[ChunkEmitter, None]] = [{} for _ in range(slots)]  # insertion-ordered sets
        self._ticks = [asyncio.Event() for _ in range(slots)]
        self._sleepers = 0
        self._dealt = 0
        self._current = 0
        self._task: asyncio.Task[None] | None = None

    def deal(self) -> int:
        """The slot of a new stream."""
        self._dealt = (self._dealt + 1) % self.slots
        return self._dealt

    def add(self, emitter: ChunkEmitter) -> None:
        self.waiting[emitter.slot][emitter] = None
        self._ensure_running()

    def remove(self, emitter: ChunkEmitter) -> None:
        self.waiting[emitter.slot].pop(emitter, None)

    async def next_tick(self, slot: int) -> None:
        tick = self._ticks[slot]
        self._sleepers += 1
        self._ensure_running()
        try:
            await tick.wait()
        finally:
            self._sleepers -= 1

    def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._sleepers or any(self.waiting):
                tick_s = self.period() / self.slots
                group = min(self.slots, math.ceil(self.min_tick_s / tick_s)) if tick_s > 0 else self.slots
                await asyncio.sleep(tick_s * group)
                for _ in range(group):
                    await self._tick()
        finally:
            self._task = None

    async def _tick(self) -> None:
        k = self._current = (self._current + 1) % self.slots
        tick, self._ticks[k] = self._ticks[k], asyncio.Event()
        tick.set()
        batch, self.waiting[k] = self.waiting[k], {}
        for emitter in batch:
            try:
                await emitter.flush()
            except Exception:  # one stream's failed publish must not stop the others' chunks
                log.exception("chunk flush of %s failed", emitter.request_id)


class ChunkEmitter:
    """Publishes CompletionChunk JSON on the request's stream subject.

    Tokens are coalesced: the first is sent at once (time to first token), later ones wait for the next
    tick of the shared `FlushTicker` and leave together in one message, which cuts NATS messages and socket
    writes several-fold at typical token rates with no visible delay. Without a ticker every token is its
    own message. `seq` counts tokens accepted; published messages carry their own
    monotonic sequence (from 0, continued across a restart on another provider; the first message after a
    restart carries restart=true)."""

    __slots__ = (
        "_buf",
        "_head",
        "msg_seq",
        "nc",
        "relay_template",
        "request_id",
        "restart",
        "seq",
        "slot",
        "subject",
        "ticker",
    )

    def __init__(
        self,
        nc: NATS,
        subject: str,
        request_id: str,
        ticker: FlushTicker | None = None,
        relay_template: dict[str, Any] | None = None,
    ) -> None:
        self.nc = nc
        self.relay_template = relay_template
        self.subject = subject
        self.request_id = request_id
        self.ticker = ticker
        self.slot = ticker.deal() if ticker is not None else 0
        self.seq = 0
        self.msg_seq = 0
        self.restart = False
        self._head = ""
        self._buf: list[str] = []

    def set_provider(self, provider: str, model: str) -> None:
        self._head = (
            f'{{"request_id":{json.dumps(self.request_id)},"provider":{json.dumps(provider)},'
            f'"model":{json.dumps(model)},"seq":'
        )

    async def emit(self, delta: str) -> None:
        self.seq += 1
        self._buf.append(delta)
        if self.ticker is None or self.msg_seq == 0:
            await self.flush()
        elif len(self._buf) == 1:
            self.ticker.add(self)

    async def pace(self, transport: asyncio.Transport | None = None) -> None:
        """Awaited by a provider adapter before it reads more of the streamed body (`CallState.pace`): sends
        the tokens read so far, then holds the next read until the next tick. Until the first token has gone
        out, reads are not held (time to first token).

        The body's `transport`, when given, stops reading from its socket meanwhile: the provider's tokens
        wait in the kernel's buffer and the next read takes them in one system call, instead of the event
        loop reading and the HTTP parser handling every token as it arrives (one read per token)."""
        if self.ticker is None or self.msg_seq == 0:
            return
        await self.flush()
        held = transport if transport is not None and transport.is_reading() else None
        if held is not None:
            held.pause_reading()
        try:
            await self.ticker.next_tick(self.slot)
        finally:
            if held is not None and not held.is_closing():
                held.resume_reading()

    def discard(self) -> None:
        """Drop tokens not yet sent (the answer restarts elsewhere) and mark the next message as a restart."""
        if self.ticker is not None:
            self.ticker.remove(self)
        self._buf.clear()
        self.restart = True

    async def flush(self) -> None:
        if not self._buf:
            return
        if self.ticker is not None:
            self.ticker.remove(self)
        delta = "".join(self._buf)
        self._buf.clear()
        restart = self.restart
        self.restart = False
        self.msg_seq += 1
        if self.relay_template is not None:
            # Straight to the final listeners, in their own format (see CompletionRequest.relay_template).
            data = dict(self.relay_template.get("data") or {})
            data["chunk"] = delta
            if restart:
                data["restart"] = True
            await self.nc.publish(self.subject, orjson.dumps({**self.relay_template, "data": data}))
        else:
            flag = "true" if restart else "false"
            head = f'{self._head}{self.msg_seq - 1},"restart":{flag},"delta":'.encode()
            await self.nc.publish(self.subject, head + orjson.dumps(delta) + b"}")
        if self.msg_seq == 1:
            send_now(self.nc)  # the first token (time to first chunk); the ticker's chunks share a write
