"""Per-service admin HTTP server: GET /health, /ready and /metrics (Prometheus text)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adp_common.net import listening_socket
from adp_common.schemas.common import ComponentHealth, HealthReply
from adp_common.telemetry import Metrics

log = logging.getLogger("adp.health")

Check = Callable[[], Awaitable[None]]


class HealthChecks:
    """Named async checks; a check raising (or taking over `timeout`) marks its component DOWN."""

    def __init__(self, service: str, instance: str) -> None:
        self.service = service
        self.instance = instance
        self.checks: dict[str, Check] = {}
        self.info: dict[str, object] = {}
        self.ready = False

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def run(self, timeout: float = 2.0) -> HealthReply:
        async def one(name: str, check: Check) -> tuple[str, ComponentHealth]:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(check(), timeout)
                return name, ComponentHealth(status="UP", latency_ms=round((time.perf_counter() - start) * 1000, 2))
            except Exception as err:
                return name, ComponentHealth(status="DOWN", detail=str(err)[:200] or type(err).__name__)

        results = dict(await asyncio.gather(*(one(n, c) for n, c in self.checks.items())))
        up = self.ready and all(c.status == "UP" for c in results.values())
        return HealthReply(
            service=self.service,
            instance=self.instance,
            status="UP" if up else "DOWN",
            components=results,
            info=dict(self.info),
        )


class Probes:
    """The probe endpoints every HTTP server of the platform serves: /health (the checks), /ready, /live and
    /metrics (Prometheus text). `ready` adds a condition of the server's own (e.g. not draining)."""

    PATHS = ("/health", "/ready", "/live", "/metrics")

    def __init__(self, checks: HealthChecks, metrics: Metrics, ready: Callable[[], bool] | None = None) -> None:
        self.checks = checks
        self.registry = metrics
        self.extra_ready = ready

    def is_ready(self) -> bool:
        return self.checks.ready and (self.extra_ready is None or self.extra_ready())

    async def health(self, request: Request) -> Response:
        reply = await self.checks.run()
        return JSONResponse(reply.model_dump(mode="json"), status_code=200 if reply.status == "UP" else 503)

    async def ready(self, request: Request) -> Response:
        ok = self.is_ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def metrics(self, request: Request) -> Response:
        body, ctype = self.registry.render()
        return Response(body, media_type=ctype)

    def endpoints(self) -> list[tuple[str, Callable[[Request], Awaitable[Response]]]]:
        return list(zip(self.PATHS, (self.health, self.ready, self.live, self.metrics), strict=True))


def build_admin_app(checks: HealthChecks, metrics: Metrics) -> Starlette:
    return Starlette(routes=[Route(path, endpoint) for path, endpoint in Probes(checks, metrics).endpoints()])


class AdminServer:
    """uvicorn in the service's own event loop; port 0 picks a free port (see `.port`)."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host = host
        self.sock = listening_socket(host, port)
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5)
