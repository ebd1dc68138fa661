"""Run the gateway: ServiceRuntime (bus, db, health) + uvicorn on ONE port, graceful drain on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn

from adp_common.net import listening_socket
from adp_common.service import ServiceRuntime, freeze_startup_heap
from adp_gateway.app import GatewayApp
from adp_gateway.guard import ConnectionGuard
from adp_gateway.settings import GatewaySettings

log = logging.getLogger("adp.gateway")
MIGRATIONS = Path(__file__).parent / "migrations"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway decides when to stop (and drains first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.rt = ServiceRuntime(
            settings, service="gateway", migrations_dir=MIGRATIONS, use_database=True, admin_server=False
        )
        self.app = GatewayApp(settings)
        self.sock = listening_socket(settings.http_host, settings.http_port, reuse_port=settings.http_reuse_port)
        self.port: int = self.sock.getsockname()[1]
        self.server: _Server | None = None
        self.guard = ConnectionGuard(settings.header_timeout_s, settings.max_connections_per_client)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    async def start(self) -> None:
        try:
            await self.rt.start()
            await self.app.start(self.rt)
            config = uvicorn.Config(
                self.app.asgi,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="wsproto",
                http=self.guard.protocol(),
                timeout_graceful_shutdown=int(self.settings.shutdown_grace_s),
                timeout_keep_alive=15,
                server_header=False,
            )
            self.server = _Server(config)
            self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
            while not self.server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("gateway HTTP server stopped during start")
                await asyncio.sleep(0.01)
            self.rt.checks.ready = True
            log.info("gateway ready", extra={"url": self.url})
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Not ready -> end live streams -> stop accepting, finish in-flight requests -> close bus and db."""
        self.rt.checks.ready = False
        await self.app.drain()
        if self.server is not None and self._task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, self.settings.shutdown_grace_s + 5)
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(Exception):
            await self.app.stop()
        await self.rt.stop()
        log.info("gateway stopped")


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[GatewayServer]:
    """The gateway on a real port inside this event loop (tests): yields once ready, drains on exit."""
    gw = GatewayServer(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def serve_until_signalled(settings: GatewaySettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    gw = GatewayServer(settings)
    await gw.start()
    freeze_startup_heap(settings.gc_full_collection_every)
    try:
        await stop.wait()
        log.info("gateway stopping: draining in-flight requests and streams")
    finally:
        await gw.stop()
