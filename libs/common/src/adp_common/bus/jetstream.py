"""JetStream: streams created or updated from the catalog, de-duplicated publishing in an Envelope, durable
pull consumers with bounded concurrency, and reading what a subject has stored."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from pydantic import BaseModel

from adp_common.bus.connection import BusConnection
from adp_common.bus.consumer import Consumer, ConsumerHandler, fetch_loop, handle_message
from adp_common.bus.replicas import raise_if_replicas_unavailable
from adp_common.bus.wire import MSG_ID_HEADER
from adp_common.catalog import StreamSpec
from adp_common.clock import RepeatClock
from adp_common.envelope import wrap
from adp_common.telemetry import current_traceparent, inject_headers

log = logging.getLogger("adp.bus")

# A JetStream publish is repeated (same message id) for this long when unanswered: a stream leader election
# after a server is lost takes a few seconds, and a frozen server's clients need 3-4 s to notice (pings).
PUBLISH_RETRY_S = 30.0
PUBLISH_RETRY_PAUSES = (0.1, 0.25, 0.5, 1.0)  # then 1.0 each time
# what an unanswered or leaderless JetStream publish raises
PUBLISH_RETRYABLE = (NatsTimeoutError, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)


T = TypeVar("T")


async def answered(call: Callable[[], Awaitable[T]], what: str, retry_for: float = PUBLISH_RETRY_S) -> T:
    """A JetStream API call at start, asked again while it goes unanswered: on a cluster that is electing
    leaders, or on a loaded machine, creating a replicated stream or consumer can take longer than one
    request's timeout (creating either again with the same config is harmless)."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return await call()
        except PUBLISH_RETRYABLE as err:
            if time.monotonic() >= deadline:
                raise
            log.info("%s: JetStream did not answer (%s); asking again", what, type(err).__name__)
            await asyncio.sleep(0.5)


# A JetStream read sent while a stream's leader changes goes unanswered: a read at start is given up after
# this long and asked again (`answered`), rather than waiting out the bus's whole request timeout.
READ_TRY_S = 2.0


async def read_at_start(call: Callable[[], Awaitable[T]], what: str) -> T:
    """A JetStream read at start: each try given up after READ_TRY_S, and asked again (`answered`)."""

    async def one_try() -> T:
        try:
            return await asyncio.wait_for(call(), READ_TRY_S)
        except TimeoutError as err:  # nats-py's own timeout is one too
            raise NatsTimeoutError from err

    return await answered(one_try, what)


class JetStream(BusConnection):
    async def ensure_stream(self, spec: StreamSpec, *, replicas: int | None = None) -> None:
        """Create the stream, or update it to this config; safe to call from every copy at start.
        `replicas` defaults to the bus's (ADP_STREAM_REPLICAS)."""
        want = replicas or self.replicas
        cfg = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy(spec.retention),
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            max_msgs=spec.max_msgs,
            duplicate_window=spec.duplicate_window_s,
            discard=DiscardPolicy.OLD,
            num_replicas=want,
            description=spec.description or None,
        )
        try:
            await answered(lambda: self.js.add_stream(cfg), f"stream {spec.name}")
            return
        except APIError as err:
            raise_if_replicas_unavailable(err, spec.name, want)
            if not isinstance(err, BadRequestError):
                raise
        # Exists with another config: update it, never lowering replicas an operator raised.
        current = await read_at_start(lambda: self.js.stream_info(spec.name), f"stream {spec.name}")
        have = current.config.num_replicas or 1
        if have < want:
            log.info("stream %s: replicas raised from %d to %d", spec.name, have, want)
        cfg.num_replicas = max(want, have)
        try:
            await self.js.update_stream(cfg)
        except APIError as err:
            raise_if_replicas_unavailable(err, spec.name, cfg.num_replicas)
            raise

    async def ensure_streams(self, bases: list[str] | None = None, *, replicas: int | None = None) -> None:
        specs = self.catalog.streams if bases is None else [self.catalog.stream_by_base(b) for b in bases]
        for spec in specs:
            await self.ensure_stream(spec, replicas=replicas)

    async def publish_event(
        self,
        subject: str,
        payload: BaseModel,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
        retry_for: float = PUBLISH_RETRY_S,
    ) -> int:
        """Publish a registered payload in an Envelope to JetStream; `msg_id` de-duplicates within the
        stream's duplicate window. Returns the stream sequence.

        An unanswered publish (`timeout` each) is sent again, with the same id, for up to `retry_for`
        seconds: the stream may be electing a new leader or the client moving to another server, and the
        id makes a repeat of a publish that was stored in fact harmless."""
        env = wrap(payload, source=f"{self.name}/{self.instance}", traceparent=current_traceparent(), id=msg_id)
        hdrs = inject_headers(headers)
        hdrs[MSG_ID_HEADER] = env.id
        data = env.model_dump_json().encode()
        deadline = time.monotonic() + retry_for
        for pause in itertools.chain(PUBLISH_RETRY_PAUSES, itertools.repeat(PUBLISH_RETRY_PAUSES[-1])):
            try:
                ack = await self.js.publish(subject, data, timeout=timeout, headers=hdrs)
                return ack.seq
            except PUBLISH_RETRYABLE as err:
                if time.monotonic() + pause >= deadline:
                    raise
                log.info("publish on %s unanswered (%s); again in %.2f s", subject, type(err).__name__, pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable: the pauses never end")

    async def consume(
        self,
        stream: str,
        durable: str,
        handler: ConsumerHandler,
        *,
        filter_subject: str | None = None,
        concurrency: int = 16,
        batch: int = 32,
        ack_wait: float = 30.0,
        progress_every: float | None = None,
        max_deliver: int = 20,
        backoff: float = 1.0,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    ) -> Consumer:
        """Run a durable pull consumer (shared by every copy using the same `durable`).

        Ack after the handler returns; `Retry` naks with a delay; `Reject` or an undecodable message is
        terminated; any other exception naks with exponential backoff. While a handler runs its message
        is kept alive (in_progress every `progress_every`, default ack_wait / 3) so long steps are not
        redelivered to another copy, while a message whose copy died is redelivered after `ack_wait`."""
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max(concurrency * 4, 64),
            filter_subject=filter_subject,
            deliver_policy=deliver_policy,
        )
        try:  # create, or update an existing durable to this config (e.g. a changed ack wait)
            await answered(lambda: self.js.add_consumer(stream, config), f"consumer {durable}")
        except BadRequestError as err:
            log.warning("consumer %s keeps its config: %s", durable, err)
        psub = await answered(
            lambda: self.js.pull_subscribe(filter_subject or "", durable=durable, stream=stream, config=config),
            f"consumer {durable}",
        )
        consumer: Consumer

        async def handle(msg: Msg) -> None:
            await handle_message(consumer, msg, handler, backoff)

        async def loop() -> None:
            await fetch_loop(consumer, psub, handle, concurrency=concurrency, batch=batch)

        # each message's ack deadline pushed back every `progress_every` while its handler runs
        every = progress_every if progress_every is not None else ack_wait / 3
        consumer = Consumer(name=durable, task=asyncio.create_task(loop()), progress=RepeatClock(every))
        self._consumers.append(consumer)
        return consumer

    async def first_seq_since(self, stream: str, since: datetime) -> int:
        """The sequence of the first message `stream` stored at or after `since` (the next one to come when
        there is none yet). A consumer that replays from a time should start from this sequence instead:
        nats-py recreates an ordered consumer after a server or leader change from the next sequence but keeps
        the start time, a pair the server refuses — the consumer would never deliver again."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            inactive_threshold=10.0,
            mem_storage=True,
        )
        info = await self.js.add_consumer(stream, config)
        try:
            # a new consumer reports the sequence before its first as delivered
            return (info.delivered.stream_seq if info.delivered else 0) + 1
        finally:
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(stream, info.name)

    async def stream_messages(
        self, stream: str, subject: str, *, start_seq: int | None = None, limit: int = 10_000
    ) -> list[Msg]:
        """Read the stored messages on `subject` (oldest first): exactly those present when called.

        An ephemeral pull consumer reports how many messages match, then they are fetched in batches, so the
        answer never depends on a timing guess (an empty subject costs one round trip, not a timeout)."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
            opt_start_seq=start_seq if start_seq else None,
            filter_subject=subject,
            inactive_threshold=10.0,
            mem_storage=True,
        )
        try:
            psub = await self.js.pull_subscribe(subject, stream=stream, config=config)
        except NotFoundError:
            return []
        out: list[Msg] = []
        try:
            want = min((await psub.consumer_info()).num_pending or 0, limit)
            while len(out) < want:
                try:
                    out += await psub.fetch(batch=min(256, want - len(out)), timeout=5)
                except (NatsTimeoutError, TimeoutError):
                    break
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        return out
