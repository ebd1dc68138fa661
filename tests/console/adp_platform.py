"""The whole platform as OS processes for the console tests (one start per test module)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from adp_common.bus import Bus
from adp_testing.fixtures import cleanup_prefix
from adp_testing.procs import ServiceProcesses

ADMIN_KEY = "console-admin-" + uuid.uuid4().hex[:12]


def platform_env(redis_url: str) -> dict[str, str]:
    return {
        "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
        "ADP_REDIS_URL": redis_url,
        "ADP_RATE_LIMIT_ENABLED": "false",
        "ADP_MAX_ACTIVE_DISCUSSIONS": "100",
        "ADP_SIMULATED_TTFT_MS": "20",
        "ADP_SIMULATED_TOKENS_PER_S": "400",
        "ADP_TURN_MAX_TOKENS": "120",
        # the simulated provider is free by default; price it so the cost chart has bars
        "ADP_COST_PRICE_SIMULATED": "20,40",
        "ADP_ALERTS_EVAL_INTERVAL_S": "0.2",
        "ADP_LOG_LEVEL": "WARNING",
    }


@dataclass
class Platform:
    url: str
    key: str
    prefix: str
    procs: ServiceProcesses
    bus: Bus


async def start_platform(nats_url: str, pg_dsn: str, redis_url: str) -> Platform:
    prefix = "tc" + uuid.uuid4().hex[:10]
    procs = ServiceProcesses(nats_url=nats_url, pg_dsn=pg_dsn, prefix=prefix)
    try:
        started = await procs.start_healthy(extra_env=platform_env(redis_url), timeout=90)
    except BaseException:
        await stop_platform_parts(procs, nats_url, None)
        raise
    gateway = next(p for p in started if p.service == "gateway")
    bus = await Bus.connect(nats_url, prefix=prefix, name="console-test", instance="console-test")
    return Platform(url=gateway.url, key=ADMIN_KEY, prefix=prefix, procs=procs, bus=bus)


async def stop_platform_parts(procs: ServiceProcesses, nats_url: str, bus: Bus | None) -> None:
    try:
        if bus is not None:
            await bus.close(grace=1)
        await procs.stop_all()
        await procs.drop_databases()
    finally:
        await cleanup_prefix(nats_url, procs.prefix)


async def stop_platform(p: Platform, nats_url: str) -> None:
    await stop_platform_parts(p.procs, nats_url, p.bus)


class TcpProxy:
    """A TCP relay in front of the gateway whose connections a test can cut (a real network drop)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.writers: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.writers.discard(writer)
            self.writers.discard(up_writer)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore()`."""
        self.refusing = True
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
