"""The shell every service runs in: settings, logging, tracing, bus, database, admin HTTP server,
health over the bus, heartbeats, and graceful shutdown on SIGTERM/SIGINT.

A service supplies a `ServiceApp` (start/stop hooks that register its bus handlers); everything
else is here so the five services stay thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import psutil
from prometheus_client import Gauge, Histogram

from adp_common import db
from adp_common.bus import Bus
from adp_common.health import AdminServer, HealthChecks, build_admin_app
from adp_common.logging import setup_logging
from adp_common.schemas.common import HealthReply
from adp_common.schemas.ops import Heartbeat
from adp_common.settings import ServiceSettings
from adp_common.telemetry import Metrics, setup_tracing, shutdown_tracing

T = TypeVar("T")

log = logging.getLogger("adp.service")


class ServiceApp(Protocol):
    async def start(self, rt: ServiceRuntime) -> None: ...

    async def stop(self) -> None: ...


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        service: str,
        migrations_dir: Path | None = None,
        use_database: bool = True,
        streams: list[str] | None = None,
        admin_server: bool = True,
    ) -> None:
        self.settings = settings
        self.service = service
        self.instance = settings.instance_id or f"{service}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.migrations_dir = migrations_dir
        self.use_database = use_database
        self.streams = streams
        self.admin_server = admin_server
        self.metrics = Metrics()
        self.checks = HealthChecks(service, self.instance)
        self.bus: Bus | None = None
        self.pool: asyncpg.Pool | None = None
        self._extra_pools: list[asyncpg.Pool] = []
        self.admin: AdminServer | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        # the event loop's lag, smoothed over the last ~2 s (see `_watch_loop_lag`): how short of CPU this
        # process is right now, for work that can adapt to it (the router's chunk interval)
        self.loop_lag_recent_s = 0.0
        self._gc_callback: Callable[[str, dict[str, int]], None] | None = None

    @property
    def database_name(self) -> str:
        if self.settings.database_name:
            return self.settings.database_name
        base = self.service.replace("-", "_")
        return f"{base}_{self.settings.db_suffix}" if self.settings.db_suffix else base

    async def start(self) -> None:
        s = self.settings
        self.bus = await Bus.connect(
            s.nats_url,
            prefix=s.subject_prefix,
            name=self.service,
            instance=self.instance,
            handler_concurrency=s.handler_concurrency,
            replicas=s.stream_replicas,
        )
        bus = self.bus

        async def nats_ok() -> None:
            if not bus.connected:
                raise ConnectionError("not connected to NATS")
            await bus.nc.flush(timeout=2)

        self.checks.add("nats", nats_ok)
        await bus.ensure_streams(self.streams)
        if self.use_database:
            self.pool = await db.open_pool(
                s.database_url.get_secret_value(),
                self.database_name,
                migrations_dir=self.migrations_dir,
                min_size=s.db_pool_min,
                max_size=s.db_pool_max,
            )
            pool = self.pool

            async def db_ok() -> None:
                await db.ping(pool)

            self.checks.add("database", db_ok)

        async def health(_: object, __: object) -> HealthReply:
            return await self.checks.run()

        await bus.serve(bus.catalog.health(self.service), health, name="health")
        if self.admin_server:
            self.admin = AdminServer(build_admin_app(self.checks, self.metrics), s.http_host, s.http_port)
            await self.admin.start()
            self.checks.info["admin_port"] = self.admin.port
        self._heartbeat = asyncio.create_task(self._heartbeats())
        self._lag_watch = asyncio.create_task(self._watch_loop_lag())
        self._watch_gc_pauses()

    async def _heartbeats(self) -> None:
        assert self.bus is not None
        proc = psutil.Process()
        while True:
            try:
                mem = psutil.virtual_memory()
                disk = shutil.disk_usage(os.environ.get("ADP_DATA_DIR", "/"))
                beat = Heartbeat(
                    service=self.service,
                    instance=self.instance,
                    rss_bytes=proc.memory_info().rss,
                    memory_pressure=round(mem.percent / 100, 4),
                    disk_free_ratio=round(disk.free / disk.total, 4),
                )
                await self.bus.publish_event(self.bus.catalog.ops("heartbeat"), beat)
            except Exception as err:  # never let heartbeats kill the service
                log.debug("heartbeat failed: %s", err)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def open_extra_pool(self, max_size: int) -> asyncpg.Pool:
        """Another pool on the service's database (work that must not queue behind the main pool's),
        closed with the runtime after the bus has drained."""
        pool = await db.open_pool(
            self.settings.database_url.get_secret_value(), self.database_name, min_size=1, max_size=max_size
        )
        self._extra_pools.append(pool)
        return pool

    async def _watch_loop_lag(self, interval_s: float = 0.05, horizon_s: float = 2.0) -> None:
        """How late a short sleep wakes up: the wait every request and stream of this process pays on top
        of its own work (CPU saturation, a blocking call, a GC pause). Exported as a histogram, and as
        `loop_lag_recent_s` (a moving average over about `horizon_s`, also a gauge); stalls of
        `loop_stall_warn_ms` or more are logged."""
        lag_hist = Histogram(
            "adp_event_loop_lag_seconds",
            "Delay of the event loop in running a due callback",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.metrics.registry,
        )
        recent = Gauge(
            "adp_event_loop_lag_recent_seconds",
            "Event-loop lag, moving average over the last ~2 s",
            registry=self.metrics.registry,
        )
        weight = interval_s / horizon_s
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(interval_s)
            lag = max(0.0, loop.time() - t0 - interval_s)
            lag_hist.observe(lag)
            self.loop_lag_recent_s += weight * (lag - self.loop_lag_recent_s)
            recent.set(self.loop_lag_recent_s)
            if lag * 1000 >= self.settings.loop_stall_warn_ms:
                log.warning("event loop stalled for %.0f ms", lag * 1000, extra={"loop_lag_ms": round(lag * 1000)})

    def _watch_gc_pauses(self) -> None:
        """Time every cyclic-GC collection (the whole process stops meanwhile): exported as a histogram per
        generation; pauses of `loop_stall_warn_ms` or more are logged."""
        pause_hist = Histogram(
            "adp_gc_pause_seconds",
            "Duration of the cyclic garbage collector's collections (the process is stopped meanwhile)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
            registry=self.metrics.registry,
        )
        by_gen = [pause_hist.labels(str(g)) for g in range(3)]
        warn_s = self.settings.loop_stall_warn_ms / 1000
        started = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
                return
            pause = time.perf_counter() - started[0]
            by_gen[info["generation"]].observe(pause)
            if pause >= warn_s:
                gen, ms = info["generation"], pause * 1000
                log.warning("garbage collection (generation %d) paused the process for %.0f ms", gen, ms)

        self._gc_callback = on_gc
        gc.callbacks.append(on_gc)

    async def stop(self) -> None:
        if self._gc_callback is not None:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._gc_callback)
            self._gc_callback = None
        self.checks.ready = False
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self.bus is not None:
            await self.bus.close(grace=self.settings.shutdown_grace_s)
        for pool in [self.pool, *self._extra_pools]:
            if pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pool.close(), 10)
        if self.admin is not None:
            await self.admin.stop()
        shutdown_tracing()


def freeze_startup_heap(full_collection_every: int) -> None:
    """Put everything allocated during start-up (modules, schemas, settings, clients) out of the cyclic
    GC's reach. Without it every full collection re-scanned that heap: 15-65 ms pauses measured in the
    router under load, each one stalling every stream the process carries (the p99 of time to first
    token). Objects made later are collected as usual. (A larger young-generation threshold was tried
    too: fewer but longer pauses, a worse p99.)

    `full_collection_every` (ADP_GC_FULL_COLLECTION_EVERY) sets how many generation-1 collections may pass
    between full ones (CPython's default: 10). A full collection scans every long-lived object, so under
    load each one stalled a process 56-121 ms (adp_gc_pause_seconds) two or three times per half minute;
    at 1000 the full collections left the load phase (logged pauses), and ten 500-discussion load runs had
    REST p95 22-544 ms, median 146 (eleven runs at 10: 118-334 ms, median 240), added time to first chunk
    p50 median +7 ms (at 10: +11) — a gain smaller than the run-to-run spread — with the same RSS."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_collection_every)


async def run_service(
    rt: ServiceRuntime, app: ServiceApp, stop_event: asyncio.Event | None = None, *, freeze_heap: bool = False
) -> None:
    """Start the runtime and the app, mark ready, wait for SIGTERM/SIGINT (or `stop_event`), drain, stop.
    `freeze_heap`: see freeze_startup_heap (process entry points only, not services run inside tests)."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop_event is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    try:
        await rt.start()
        await app.start(rt)
        if freeze_heap:
            freeze_startup_heap(rt.settings.gc_full_collection_every)
        rt.checks.ready = True
        port = rt.admin.port if rt.admin is not None else rt.settings.http_port
        log.info("%s ready", rt.service, extra={"admin_url": f"http://{rt.settings.http_host}:{port}"})
        await stop.wait()
        log.info("%s stopping: draining in-flight work", rt.service)
    finally:
        rt.checks.ready = False
        with contextlib.suppress(Exception):
            await app.stop()
        await rt.stop()
        log.info("%s stopped", rt.service)


def run_loop(main: Coroutine[Any, Any, T], event_loop: str = "uvloop") -> T:
    """asyncio.run on uvloop when available: the services are socket-bound (NATS, HTTP, PostgreSQL) and
    uvloop's C event loop roughly halves the loop's own CPU per message."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # e.g. Windows
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def main_for(service: str, settings: ServiceSettings, app: ServiceApp, **runtime_kwargs: Any) -> None:
    """Entry point helper for `adp-<service>` console scripts."""
    rt = ServiceRuntime(settings, service=service, **runtime_kwargs)
    setup_logging(
        service,
        rt.instance,
        level=settings.log_level,
        log_dir=settings.log_dir,
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
        slow_operation_ms=settings.slow_operation_ms,
    )
    setup_tracing(service, rt.instance)
    try:
        run_loop(run_service(rt, app, freeze_heap=True), settings.event_loop)
    except KeyboardInterrupt:
        pass
