"""The bus's connection to NATS and the state every part of the bus shares: connecting (with endless
reconnects) and closing in order (stop taking work, let in-flight work finish, drain)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Self

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.service import Service as MicroService

from adp_common.bus.consumer import Consumer
from adp_common.catalog import Catalog

log = logging.getLogger("adp.bus")

# A server that stops answering (frozen, cut off by the network) leaves its TCP connection open: only unanswered
# pings show it, so they are frequent — the connection is given up after MAX_OUTSTANDING_PINGS pings without an
# answer (3-4 s), and the client moves to another server of the list.
PING_INTERVAL_S = 1.0
MAX_OUTSTANDING_PINGS = 3


def server_urls(url: str) -> list[str]:
    """The servers of ADP_NATS_URL: one URL, or a cluster's URLs separated by commas. The client starts at
    one of them (in random order) and fails over to the others while reconnecting."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no NATS server URL given")
    return urls


class BusConnection:
    def __init__(self, nc: NATS, catalog: Catalog, *, name: str = "adp", instance: str = "", replicas: int = 1) -> None:
        self.nc = nc
        self.replicas = replicas  # of every stream and KV bucket this bus creates (ADP_STREAM_REPLICAS)
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self.catalog = catalog
        self.name = name
        self.instance = instance
        self._micro: MicroService | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handler_limit = 64  # request handlers in flight per process (connect's handler_concurrency)
        self._handler_backlog: deque[Callable[[], None]] = deque()  # requests waiting for a free handler
        self._consumers: list[Consumer] = []
        self._subs: list[Subscription] = []
        self._kv: dict[str, KeyValue] = {}
        self._reply_prefix: str | None = None
        self._reply_tokens = itertools.count()
        self._replies: dict[str, asyncio.Future[Msg]] = {}

    @classmethod
    async def connect(
        cls,
        url: str,  # one server's URL, or a cluster's: several separated by commas
        *,
        prefix: str = "adp",
        name: str = "adp",
        instance: str = "",
        connect_timeout: float = 5.0,
        handler_concurrency: int = 64,
        replicas: int = 1,
        ping_interval: float = PING_INTERVAL_S,
    ) -> Self:
        async def on_error(err: Exception) -> None:
            log.warning("nats error: %s", err)

        async def on_disconnect() -> None:
            if not nc.is_closed and not nc.is_draining:
                log.warning("nats disconnected")

        async def on_reconnect() -> None:
            log.info("nats reconnected")

        nc = NATS()
        await nc.connect(
            servers=server_urls(url),
            name=f"{name}:{instance}" if instance else name,
            connect_timeout=connect_timeout,  # type: ignore[arg-type]  # seconds; nats-py annotates int, takes float
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # seconds; nats-py annotates int, takes float
            ping_interval=ping_interval,  # type: ignore[arg-type]  # seconds, as above
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            pending_size=64 * 1024 * 1024,
        )
        bus = cls(nc, Catalog(prefix), name=name, instance=instance, replicas=replicas)
        bus._handler_limit = handler_concurrency
        return bus

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self, grace: float = 20.0) -> None:
        """Stop taking work, let in-flight handlers and consumers finish (up to `grace`), then drain."""
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await asyncio.gather(*(c.stop(grace) for c in self._consumers), return_exceptions=True)
        deadline = time.monotonic() + grace
        while self._handler_tasks and (left := deadline - time.monotonic()) > 0:  # the backlog starts more
            await asyncio.wait(set(self._handler_tasks), timeout=left)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> bool:
    """Poll an async predicate until true or timeout (used by start-up checks and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False
