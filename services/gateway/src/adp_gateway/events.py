"""Live discussion events for one client: subscribe first, replay history, then live, de-duplicated by seq.

Durable events (JetStream DISCUSSIONS, Envelope-wrapped, seq per discussion) and token chunks (core NATS,
plain DiscussionEvent JSON, seq 0) both reach the core subscription in publication order. History is read
after subscribing, so nothing published in between is lost; seq de-duplicates the overlap. The history
comes from the dialogue service's event store (`HistoryReader`: events are stored before they are
published, so the store has every event the subscription can have missed). Each client has
a bounded buffer: a client that falls too far behind gets an `error` event (SLOW_CONSUMER) and is cut off;
it can resume with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from adp_common import sse
from adp_common.bus import Bus
from adp_common.envelope import decode
from adp_common.schemas.dialogue import MAX_EVENT_SEQ, TERMINAL_EVENT_NAMES, DiscussionEvent

log = logging.getLogger("adp.gateway.events")

SLOW_CONSUMER = "SLOW_CONSUMER"


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Overflow:
    last_seq: int


Item = DiscussionEvent | Heartbeat | Overflow

# The stored events of the discussion with seq > the argument, oldest first.
HistoryReader = Callable[[int], Awaitable[list[DiscussionEvent]]]


def parse_message(subject: str, data: bytes) -> DiscussionEvent | None:
    """A DiscussionEvent from a durable envelope (…events) or a plain chunk (…chunks); None if unreadable."""
    try:
        if subject.endswith(".events"):
            env = decode(data)
            payload = env.payload
            if isinstance(payload, DiscussionEvent):
                return payload
            return DiscussionEvent.model_validate(payload)
        return DiscussionEvent.model_validate_json(data)
    except (ValidationError, ValueError, KeyError, TypeError):
        log.warning("unreadable discussion message on %s", subject)
        return None


def event_payload(ev: DiscussionEvent) -> dict[str, Any]:
    """The JSON clients get (SSE data and Socket.IO payload): the event's data plus discussionId."""
    return {**ev.data, "discussionId": ev.discussionId}


def format_sse(ev: DiscussionEvent) -> str:
    data = orjson.dumps(event_payload(ev), default=str).decode()
    return sse.encode(data, event=ev.event, id=ev.seq if ev.seq > 0 else None)


def format_sse_error(discussion_id: str, code: str, message: str, last_seq: int) -> str:
    data = {"discussionId": discussion_id, "code": code, "message": message, "lastEventId": last_seq}
    return sse.encode(json.dumps(data, separators=(",", ":")), event="error")


def parse_last_event_id(value: str | None) -> int:
    """0 when absent; raises ValueError when present but not an integer from 0 to MAX_EVENT_SEQ."""
    if value is None or value.strip() == "":
        return 0
    n = int(value.strip())
    if not 0 <= n <= MAX_EVENT_SEQ:
        raise ValueError("event id out of range")
    return n


class EventStream:
    """One client's view of a discussion's events (use `async with`, then iterate `items()`)."""

    def __init__(
        self,
        bus: Bus,
        discussion_id: str,
        history: HistoryReader,
        *,
        last_seq: int = 0,
        replay: bool = True,
        queue_size: int = 2000,
        heartbeat_s: float = 15.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.bus = bus
        self.read_history = history
        self.discussion_id = discussion_id
        self.last_seq = last_seq
        self.replay = replay
        self.heartbeat_s = heartbeat_s
        self.stop = stop or asyncio.Event()
        self.queue_size = queue_size
        # Live messages wait in a plain deque; the reader, when it has caught up, parks on one future that
        # the next message resolves. (An asyncio.Queue read under a timeout — a task, a wait() and a timer
        # for every message — cost more than the rest of a chunk's trip through the gateway.)
        self.buffer: deque[Msg] = deque()
        self.overflowed = False
        self._waiter: asyncio.Future[None] | None = None
        self._heartbeat_due = False
        self._last_sent = 0.0  # loop time of the last item handed to the client
        self._sub: Subscription | None = None
        self._history: list[DiscussionEvent] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the heartbeat clock while items() runs
        self._ended = False

    def _tick(self) -> None:
        # A method, not a closure over its own timer: that closure referenced itself, a cycle that left
        # every finished stream to the cyclic GC. The clock is re-armed for one period after the last item
        # sent, so the client never waits longer than a period (a fixed clock let up to two pass).
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_sent
        if quiet >= self.heartbeat_s * 0.99:
            self._heartbeat_due = True
            self._wake()
            quiet = 0.0
        self._timer = loop.call_later(self.heartbeat_s - quiet, self._tick)

    def end(self) -> None:
        """The client went away: items() returns at its next step instead of waiting for more."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def __aenter__(self) -> EventStream:
        def on_msg(msg: Msg) -> None:
            if self.overflowed:
                return
            if len(self.buffer) >= self.queue_size:
                self.overflowed = True
            else:
                self.buffer.append(msg)
            self._wake()

        # Inline: the client's reader is woken as the message is parsed, not a loop turn later by a task.
        self._sub = await self.bus.subscribe_inline(self.bus.catalog.discussion_all(self.discussion_id), on_msg)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def prepare(self) -> None:
        """Read the history (after subscribing) and fix the de-duplication baseline; idempotent."""
        if self._history is not None:
            return
        self._history = []
        for ev in await self.read_history(self.last_seq):
            if ev.seq > self.last_seq:
                if self.replay:
                    self._history.append(ev)
                self.last_seq = ev.seq

    def has_more(self) -> bool:
        """Whether another live message is already waiting (callers batch their writes on it)."""
        return bool(self.buffer)

    async def items(self) -> AsyncIterator[Item]:
        # 1. history (read after the subscription, so nothing published in between is lost)
        await self.prepare()
        assert self._history is not None
        pending, self._history = self._history, []
        for ev in pending:
            yield ev
            if ev.event in TERMINAL_EVENT_NAMES:
                return  # the discussion is over: nothing more will come
        # 2. live; a Heartbeat when a whole heartbeat period passed with nothing sent
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        self._timer = loop.call_later(self.heartbeat_s, self._tick)
        stop_wait = asyncio.ensure_future(self.stop.wait())
        stop_wait.add_done_callback(lambda _: self._wake())
        try:
            while not (self.stop.is_set() or self._ended):
                if self.overflowed:  # the client fell too far behind: cut it off, it resumes by seq
                    yield Overflow(self.last_seq)
                    return
                if not self.buffer:
                    if await self._idle(loop):
                        yield Heartbeat()
                    continue
                msg = self.buffer.popleft()
                parsed = parse_message(msg.subject, msg.data)
                if parsed is None:
                    continue
                ev = parsed
                if msg.subject.endswith(".events"):
                    if ev.seq <= self.last_seq:
                        continue  # already delivered (history overlap or a re-publish)
                    if ev.seq > self.last_seq + 1:
                        missed = await self._read_gap(ev.seq)
                        if missed is None:  # the client resumes by seq: nothing is lost
                            yield Overflow(self.last_seq)
                            return
                        for m in missed:
                            self.last_seq = m.seq
                            yield m
                            if m.event in TERMINAL_EVENT_NAMES:
                                return
                    self.last_seq = ev.seq
                self._last_sent = loop.time()
                yield ev
                if ev.event in TERMINAL_EVENT_NAMES:
                    return
        finally:
            if self._timer is not None:
                self._timer.cancel()  # which drops its callback, and with it the reference back to this stream
                self._timer = None
            stop_wait.cancel()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Nothing buffered: True at once when a heartbeat is due, else wait for the next wake-up (a message,
        the heartbeat clock, the stop signal or the end) and return False."""
        if self._heartbeat_due:
            self._heartbeat_due = False
            self._last_sent = loop.time()
            return True
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return False

    async def _read_gap(self, seq: int) -> list[DiscussionEvent] | None:
        """The durable events between the last delivered one and `seq`, which never reached the subscription
        (core delivery is at most once: e.g. the connection was moving to another NATS server), read from the
        store; None when the store cannot be read."""
        try:
            return [m for m in await self.read_history(self.last_seq) if m.seq < seq]
        except Exception as err:
            log.warning("events %d-%d of %s not read: %s", self.last_seq + 1, seq - 1, self.discussion_id, err)
            return None


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response whose body ends by itself when the client disconnects: a watcher
    reads the ASGI `http.disconnect` and calls `on_disconnect` (EventStream.end for a discussion's events,
    cancelling the LLM call for an OpenAI-compatible stream), and the body returns.
    Starlette's StreamingResponse (under uvicorn's ASGI 2.3) runs the body beside a disconnect listener in
    an anyio task group and cancels it instead: the cancellation's exceptions and tracebacks referenced the
    whole stream in a cycle — its frames, buffer and subscription — left to the rarely run full collection
    for every stream a client closed."""

    def __init__(
        self,
        body: AsyncIterator[str] | AsyncIterator[bytes],
        on_disconnect: Callable[[], object],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(body, headers=headers, media_type="text/event-stream")
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.on_disconnect()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for part in self.body_iterator:  # SSE text (discussion events) or bytes (OpenAI chunks)
                body = part.encode() if isinstance(part, str) else part
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
