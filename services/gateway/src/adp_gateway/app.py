"""The gateway service shell: builds the context, the HTTP app (FastAPI + Socket.IO + middleware),
ensures the bootstrap admin key, and publishes request-stats windows for the alerts service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nats.aio.msg import Msg

from adp_common.envelope import envelope_of
from adp_common.schemas.common import KeyRevoked, SessionsEnded
from adp_common.schemas.ops import RequestStats
from adp_common.service import ServiceRuntime
from adp_gateway.api import build_api
from adp_gateway.auth import bootstrap_ids, hash_key
from adp_gateway.context import GatewayContext
from adp_gateway.observability import GatewayMetrics, GatewayMiddleware, StatsWindow
from adp_gateway.ratelimit import RateLimiter
from adp_gateway.settings import GatewaySettings
from adp_gateway.sio import SocketGateway
from adp_gateway.store import Store

StatsEnvelope = envelope_of(RequestStats)
log = logging.getLogger("adp.gateway")

MULTIPART_OVERHEAD = 256 * 1024


class GatewayApp:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None
        self.ctx: GatewayContext | None = None
        self.sockets: SocketGateway | None = None
        self.asgi: Any = None
        self._stats_task: asyncio.Task[None] | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt
        s = self.settings
        assert rt.bus is not None and rt.pool is not None
        store = Store(rt.pool)
        limiter = RateLimiter(
            s.redis_url or None,
            namespace=f"adp:{s.subject_prefix}",
            window_s=s.rate_limit_window_s,
            timeout_s=s.redis_timeout_s,
        )
        metrics = GatewayMetrics(rt.metrics.registry)
        ctx = GatewayContext(settings=s, rt=rt, bus=rt.bus, store=store, limiter=limiter, metrics=metrics)
        self.ctx = ctx
        await rt.bus.on_notice(rt.bus.catalog.key_revoked, KeyRevoked, ctx.on_key_revoked)
        await rt.bus.on_notice(rt.bus.catalog.sessions_ended, SessionsEnded, ctx.on_sessions_ended)
        if s.bootstrap_api_key is not None and s.bootstrap_api_key.get_secret_value():
            key = s.bootstrap_api_key.get_secret_value()
            user_id, key_id = bootstrap_ids(key)
            await store.ensure_bootstrap(user_id, s.bootstrap_admin_name, key_id, hash_key(key))
            log.info("bootstrap admin key ensured", extra={"key_id": key_id, "user_id": user_id})

        async def redis_check() -> None:
            # informational: the limiter falls back to local counters without Redis
            with contextlib.suppress(Exception):
                await asyncio.wait_for(limiter.ping(), s.redis_timeout_s * 4)

        rt.checks.add("redis_optional", redis_check)
        api = build_api(ctx)
        self.sockets = SocketGateway(ctx)
        self.asgi = GatewayMiddleware(
            self.sockets.asgi(api),
            metrics=metrics,
            window=ctx.window,
            max_inflight=s.max_inflight,
            max_body_bytes=s.max_body_bytes,
            max_upload_bytes=s.max_file_bytes + MULTIPART_OVERHEAD,
            body_timeout_s=s.body_timeout_s,
            trust_forwarded_for=s.trust_forwarded_for,
        )
        await rt.bus.subscribe(rt.bus.catalog.ops("request-stats"), self._on_request_stats)
        self._stats_task = asyncio.create_task(self._publish_stats())

    async def _on_request_stats(self, msg: Msg) -> None:
        """Every gateway copy's request-stats window (this one's too): the platform-wide request figures."""
        assert self.ctx is not None
        try:
            self.ctx.platform_requests.add(StatsEnvelope.model_validate_json(msg.data).payload)
        except ValueError as err:
            log.warning("unreadable request stats: %s", err)

    async def _publish_stats(self) -> None:
        assert self.ctx is not None and self.rt is not None
        ctx = self.ctx
        while True:
            await asyncio.sleep(self.settings.request_stats_interval_s)
            window, ctx.window[0] = ctx.window[0], StatsWindow()
            try:
                stats = window.to_stats("gateway", self.rt.instance)
                await ctx.bus.publish_event(ctx.bus.catalog.ops("request-stats"), stats)
            except Exception as err:  # stats are best effort; never kill the gateway over them
                log.warning("could not publish request stats: %s", err)

    async def drain(self) -> None:
        """Stop live streams and sockets (clients resume elsewhere with Last-Event-ID)."""
        if self.ctx is not None:
            self.ctx.draining.set()
        if self.sockets is not None:
            await self.sockets.close()

    async def stop(self) -> None:
        await self.drain()
        if self._stats_task is not None:
            self._stats_task.cancel()
            # Bounded: shutdown must never hang on a background task.
            await asyncio.wait({self._stats_task}, timeout=2)
        if self.ctx is not None:
            await self.ctx.limiter.close()
