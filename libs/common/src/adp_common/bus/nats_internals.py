"""Every use of nats-py's private internals, in one place.

Three hot paths skip a turn of the event loop that nats-py puts in their way (each turn of a busy loop is
added to the time to first chunk, see docs/architecture.md):

- `send_now` writes what a connection has queued at once instead of leaving it to nats-py's flusher task;
- `subscribe_inline` hands each message to a plain function from the connection's read loop, not through
  a subscription's queue and task;
- `add_endpoint` does the same for a `nats.micro` endpoint's requests.

They read and replace private fields, so they are used only on a nats-py release whose internals were
reviewed (`REVIEWED_RELEASES`); on any other the same functions fall back to the public API — correct, a
turn slower. Upgrading nats-py is a review of this file: check the fields below still mean the same, then
add the release. tests/test_nats_internals.py runs both paths.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import weakref
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service as MicroService

log = logging.getLogger("adp.bus")

REVIEWED_RELEASES = ("2.16",)  # major.minor of the nats-py releases whose private fields this file uses


def reviewed(version: str) -> bool:
    """Whether nats-py `version` is one whose internals this module was written against."""
    return ".".join(version.split(".")[:2]) in REVIEWED_RELEASES


INSTALLED = importlib.metadata.version("nats-py")
# Read on every call (not bound at import), so a test can run the public-API fallback.
USE_PRIVATE_API = reviewed(INSTALLED)
if not USE_PRIVATE_API:
    log.info("nats-py %s is not a reviewed release: the bus uses its public API only", INSTALLED)


def send_now(nc: NATS) -> None:
    """Put what the connection has queued on its socket now. nats-py leaves every publish to its flusher
    task, which writes on a later turn of the event loop — under load a busy turn later, which a first token
    waits for. Only when the socket's write buffer is empty: otherwise the flusher writes it, and its
    drain() keeps the back-pressure of a slow server. Without the private API: nothing, the flusher writes."""
    if not USE_PRIVATE_API:
        return
    try:
        if nc._pending_data_size == 0 or not nc.is_connected:
            return
        # `_transport` is None while (re)connecting; the AttributeError below covers it.
        writer = nc._transport._io_writer  # type: ignore[union-attr]  # None handled below
        if writer.transport.get_write_buffer_size():
            return
        writer.writelines(nc._pending)
    except (AttributeError, RuntimeError):  # no transport (reconnecting, closed): the flusher's turn
        return
    nc._pending = []
    nc._pending_data_size = 0


class _Inline:
    """Takes the place of a nats-py subscription's pending-message queue: each message goes to `handler`
    as the connection's read loop parses it, with no queue, task or turn of the event loop in between.

    It holds its subscription weakly: the subscription holds it, and a cycle would leave every finished
    subscription — with the handler and all the handler's closure holds (an LLM call's state, a client's
    event stream) — to the cyclic GC, whose full collections a service under load runs rarely (see
    adp_common.service.freeze_startup_heap): memory would grow with every call until one came."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: Subscription, handler: Callable[[Msg], None]) -> None:
        self.sub = weakref.ref(sub)
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        sub = self.sub()
        if sub is not None:  # the read loop holds the subscription while it hands a message over
            sub._pending_size -= len(msg.data)
        _call(self.handler, msg)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None

    async def get(self) -> Msg:  # what a callback subscription's task waits on: nothing ever comes here
        never: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        return await never


def _call(handler: Callable[[Msg], None], msg: Msg) -> None:
    try:
        handler(msg)
    except Exception:  # never into the read loop: that would drop the connection
        log.exception("inline handler for %s failed", msg.subject)


def _install_inline(sub: Subscription, handler: Callable[[Msg], None]) -> None:
    # _Inline provides every method of asyncio.Queue that nats-py calls on `_pending_queue`.
    sub._pending_queue = _Inline(sub, handler)  # type: ignore[assignment]  # duck-typed queue, see above


async def subscribe_inline(nc: NATS, subject: str, handler: Callable[[Msg], None]) -> Subscription:
    """Subscribe so that `handler` gets every message in order, called from the read loop (private API) or
    from the subscription's callback task (public API)."""
    if not USE_PRIVATE_API:

        async def cb(msg: Msg) -> None:
            _call(handler, msg)

        return await nc.subscribe(subject, cb=cb)
    sub = await nc.subscribe(subject)
    _install_inline(sub, handler)
    # nats-py gives a subscription without a callback a message iterator, which references the
    # subscription back (a cycle, see _Inline); an inline subscription is never iterated.
    sub._message_iterator = None
    return sub


async def add_endpoint(
    micro: MicroService, *, name: str, subject: str, queue_group: str, dispatch: Callable[[MicroRequest], None]
) -> None:
    """Add a `nats.micro` endpoint whose requests go to `dispatch`: from the read loop, counted in the
    endpoint's stats as nats.micro counts them (private API), or from nats.micro's own subscription task."""

    async def on_request(req: MicroRequest) -> None:
        dispatch(req)

    handler: Callable[[MicroRequest], Awaitable[None]] = on_request
    await micro.add_endpoint(name=name, subject=subject, handler=handler, queue_group=queue_group)
    if not USE_PRIVATE_API:
        return
    endpoint = micro._endpoints[-1]

    def on_msg(msg: Msg) -> None:
        endpoint._num_requests += 1  # what nats.micro's own dispatch counts ($SRV.STATS)
        dispatch(MicroRequest(msg))

    # Its callback path stays valid: the subscription's task only ever waits on the replaced queue.
    sub = endpoint._subscription
    if sub is not None:
        _install_inline(sub, on_msg)
