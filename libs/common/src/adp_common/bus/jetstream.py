"""JetStream: streams created or updated from the catalog, de-duplicated publishing in an Envelope, durable
pull consumers with bounded concurrency, and reading what a subject has stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
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
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel

from adp_common.bus.connection import BusConnection
from adp_common.bus.consumer import Consumer, ConsumerHandler, fetch_loop, handle_message
from adp_common.bus.wire import MSG_ID_HEADER
from adp_common.catalog import StreamSpec
from adp_common.clock import RepeatClock
from adp_common.envelope import wrap
from adp_common.telemetry import current_traceparent, inject_headers

log = logging.getLogger("adp.bus")


class JetStream(BusConnection):
    async def ensure_stream(self, spec: StreamSpec, *, replicas: int = 1) -> None:
        """Create the stream, or update it to this config; safe to call from every copy at start."""
        cfg = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy(spec.retention),
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            max_msgs=spec.max_msgs,
            duplicate_window=spec.duplicate_window_s,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
            description=spec.description or None,
        )
        try:
            await self.js.add_stream(cfg)
        except BadRequestError:
            # Exists with another config: update it, but never lower replicas an operator raised.
            with contextlib.suppress(Exception):
                current = await self.js.stream_info(spec.name)
                cfg.num_replicas = max(replicas, current.config.num_replicas or 1)
            await self.js.update_stream(cfg)

    async def ensure_streams(self, bases: list[str] | None = None, *, replicas: int = 1) -> None:
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
    ) -> int:
        """Publish a registered payload in an Envelope to JetStream; `msg_id` de-duplicates within the
        stream's duplicate window. Returns the stream sequence."""
        env = wrap(payload, source=f"{self.name}/{self.instance}", traceparent=current_traceparent(), id=msg_id)
        hdrs = inject_headers(headers)
        hdrs[MSG_ID_HEADER] = env.id
        ack = await self.js.publish(subject, env.model_dump_json().encode(), timeout=timeout, headers=hdrs)
        return ack.seq

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
            await self.js.add_consumer(stream, config)
        except BadRequestError as err:
            log.warning("consumer %s keeps its config: %s", durable, err)
        psub = await self.js.pull_subscribe(filter_subject or "", durable=durable, stream=stream, config=config)
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
