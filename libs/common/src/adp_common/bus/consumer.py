"""A durable JetStream pull consumer at work: what its handler receives, how a handler asks for a retry or
gives a message up, and the fetch loop and per-message handling (ack, nak with backoff, term, and the ack
deadline pushed back while the handler runs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import ValidationError

import adp_common.schemas  # noqa: F401  (registers every event type for decode())
from adp_common.bus.wire import short_error
from adp_common.clock import RepeatClock
from adp_common.envelope import Envelope, decode
from adp_common.retry import Backoff
from adp_common.telemetry import extract_context, tracer

log = logging.getLogger("adp.bus")

MAX_NAK_DELAY_S = 30.0  # the longest pause before a failed message is redelivered
FETCH_RETRY_S = 0.5  # pause after a failed fetch (the client reconnects meanwhile)


class Retry(Exception):
    """Raised by a consumer handler: nak the message so it is redelivered after `delay` seconds."""

    def __init__(self, reason: str = "", delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Reject(Exception):
    """Raised by a consumer handler: the message can never be processed; terminate it (no redelivery)."""


@dataclass
class Delivery:
    """What a JetStream consumer handler receives."""

    msg: Msg
    envelope: Envelope[Any]
    num_delivered: int
    stream_seq: int

    @property
    def payload(self) -> Any:
        return self.envelope.payload

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})


ConsumerHandler = Callable[[Delivery], Awaitable[None]]


@dataclass
class Consumer:
    """A running durable pull consumer; stop() stops fetching and drains in-flight messages."""

    name: str
    task: asyncio.Task[None]
    # pushes back the ack deadline (in_progress) of every message in flight, the due ones in one write
    progress: RepeatClock
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    processed: int = 0
    failed: int = 0

    @property
    def progress_clock(self) -> asyncio.Task[None] | None:
        return self.progress.task

    async def stop(self, grace: float = 20.0) -> None:
        self.stopping.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, timeout=grace)
        if self.inflight:
            _, pending = await asyncio.wait(self.inflight, timeout=grace)
            for t in pending:
                t.cancel()
        self.progress.stop()


def nak_delay(backoff: float, num_delivered: int) -> float:
    """Exponential backoff from `backoff` seconds, at most MAX_NAK_DELAY_S, with jitter (half to full)."""
    return Backoff(initial_s=backoff, max_s=MAX_NAK_DELAY_S, jitter=True).pause(num_delivered)


async def handle_message(consumer: Consumer, msg: Msg, handler: ConsumerHandler, backoff: float) -> None:
    """Run `handler` on one message and settle it: ack on success, nak with a delay on `Retry`, term on
    `Reject` or an undecodable message, nak with backoff on any other error, nak at once on cancellation."""
    headers = dict(msg.headers or {})
    token = otel_context.attach(extract_context(headers))
    consumer.progress.add(id(msg), msg.in_progress)
    try:
        meta = msg.metadata
        try:
            env = decode(msg.data)
        except (ValidationError, ValueError, KeyError) as err:
            log.error("rejecting undecodable message on %s: %s", msg.subject, short_error(err))
            await msg.term()
            return
        with tracer().start_as_current_span(f"consume {consumer.name}", kind=trace.SpanKind.CONSUMER):
            await handler(
                Delivery(msg=msg, envelope=env, num_delivered=meta.num_delivered, stream_seq=meta.sequence.stream)
            )
        await msg.ack()
        consumer.processed += 1
    except Reject as err:
        log.error("terminating message on %s: %s", msg.subject, err)
        consumer.failed += 1
        with contextlib.suppress(Exception):
            await msg.term()
    except Retry as err:
        with contextlib.suppress(Exception):
            await msg.nak(delay=err.delay)
    except asyncio.CancelledError:
        # Shutting down mid-message: hand it straight back for another copy.
        with contextlib.suppress(Exception):
            await msg.nak()
        raise
    except Exception:
        consumer.failed += 1
        n = msg.metadata.num_delivered if msg.metadata else 1
        delay = nak_delay(backoff, n)
        log.exception("handler failed on %s (delivery %d); retry in %.1fs", msg.subject, n, delay)
        with contextlib.suppress(Exception):
            await msg.nak(delay=delay)
    finally:
        consumer.progress.remove(id(msg))
        otel_context.detach(token)


async def fetch_loop(
    consumer: Consumer,
    psub: JetStreamContext.PullSubscription,
    handle: Callable[[Msg], Awaitable[None]],
    *,
    concurrency: int,
    batch: int,
) -> None:
    """Fetch while not stopping, never more than `concurrency` messages in flight, each in its own task."""
    slots = asyncio.Semaphore(concurrency)

    async def run(msg: Msg) -> None:
        try:
            await handle(msg)
        finally:
            slots.release()

    while not consumer.stopping.is_set():
        free = concurrency - len(consumer.inflight)
        if free <= 0:
            # Full: wait for a handler to finish (its task leaves `inflight` when done).
            await asyncio.wait(set(consumer.inflight), return_when=asyncio.FIRST_COMPLETED)
            continue
        try:
            msgs = await psub.fetch(batch=min(batch, free), timeout=1.0)
        except (NatsTimeoutError, TimeoutError):
            continue
        except Exception as err:  # connection trouble: back off, the client reconnects
            if consumer.stopping.is_set():
                break
            log.warning("fetch on %s failed: %s", consumer.name, err)
            await asyncio.sleep(FETCH_RETRY_S)
            continue
        for msg in msgs:
            await slots.acquire()
            task = asyncio.create_task(run(msg))
            consumer.inflight.add(task)
            task.add_done_callback(consumer.inflight.discard)
    with contextlib.suppress(Exception):
        await psub.unsubscribe()
