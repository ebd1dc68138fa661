"""Core NATS publish/subscribe (token chunks, live notifications) and notices: best-effort control
messages every copy of a service hears."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from adp_common.bus import nats_internals
from adp_common.bus.connection import BusConnection
from adp_common.bus.wire import M, encode_payload

log = logging.getLogger("adp.bus")


class PubSub(BusConnection):
    # Whether `subscribe_inline` handlers run in the connection's read loop: then a message that reached this
    # connection before another (a reply, say) has been handled before that one is even looked at.
    inline_in_order: bool = nats_internals.USE_PRIVATE_API

    async def publish(
        self, subject: str, payload: BaseModel | dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Fire-and-forget core NATS publish (token chunks, live notifications)."""
        await self.nc.publish(subject, encode_payload(payload), headers=headers)

    async def subscribe(
        self,
        subject: str,
        cb: Callable[[Msg], Awaitable[None]] | None = None,
        *,
        queue: str = "",
        pending_msgs_limit: int = 65536,
    ) -> Subscription:
        sub = await self.nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=pending_msgs_limit)
        await self.nc.flush(timeout=5)
        if cb is not None:
            self._subs.append(sub)
        return sub

    async def subscribe_inline(
        self, subject: str, handler: Callable[[Msg], None], *, flush: bool = True
    ) -> Subscription:
        """Subscribe with a plain function called from the connection's read loop for every message, in
        order: one turn of the event loop sooner than a `subscribe` callback and no task per subscription.
        `handler` must be quick and must not block; it usually hands the message on (a buffer, a future).
        `flush=False` skips the round trip that makes sure the server has the subscription on return (for
        a caller whose next message on this connection is what depends on it)."""
        sub = await nats_internals.subscribe_inline(self.nc, subject, handler)
        if flush:
            await self.nc.flush(timeout=5)
        return sub

    async def notify(self, subject: str, notice: BaseModel) -> None:
        """Publish a notice to every subscriber (no queue group). Best effort: a failure is logged, not
        raised — whoever sends a notice has a slower fallback for a lost one (a TTL, a stale check)."""
        try:
            await self.publish(subject, notice)
        except Exception as err:
            log.warning("notice %s on %s not sent: %s", type(notice).__name__, subject, err)

    async def on_notice(self, subject: str, model: type[M], handler: Callable[[M], Awaitable[None] | None]) -> None:
        """Hear every notice on `subject` as a `model` (unreadable ones are logged and skipped)."""

        async def cb(msg: Msg) -> None:
            try:
                notice = model.model_validate_json(msg.data)
            except ValueError:
                log.warning("unreadable %s notice on %s", model.__name__, msg.subject)
                return
            result = handler(notice)
            if result is not None:
                await result

        await self.subscribe(subject, cb)
