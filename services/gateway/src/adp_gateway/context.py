"""Everything a request handler needs (bus, store, limiter, metrics, settings), plus the calls to the other
services with timeouts. One instance per gateway process; no discussion state is kept here."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.llm_client import LLMClient
from adp_common.schemas.common import HealthReply, KeyRevoked, SessionsEnded
from adp_common.schemas.dialogue import (
    Command,
    DialogueQuery,
    DiscussionEvent,
    DiscussionView,
    EventsReply,
    FileRef,
)
from adp_common.service import ServiceRuntime
from adp_gateway.auth import ANONYMOUS_USER_ID, Principal, TTLCache, bearer_token, hash_key
from adp_gateway.events import HistoryReader
from adp_gateway.files import PdfSandbox
from adp_gateway.metrics_report import PlatformRequests
from adp_gateway.observability import GatewayMetrics, StatsWindow
from adp_gateway.pdf_text import Limits
from adp_gateway.ratelimit import BlockedClients, Counter, Decision, RateLimiter
from adp_gateway.sessions import LiveSessions
from adp_gateway.settings import GatewaySettings
from adp_gateway.store import Store

log = logging.getLogger("adp.gateway")
M = TypeVar("M", bound=BaseModel)

SERVICES = ("dialogue", "llm-router", "cost", "alerts")


@dataclass
class GatewayContext:
    settings: GatewaySettings
    rt: ServiceRuntime
    bus: Bus
    store: Store
    limiter: RateLimiter
    metrics: GatewayMetrics
    window: list[StatsWindow] = field(default_factory=lambda: [StatsWindow()])
    platform_requests: PlatformRequests = field(default_factory=PlatformRequests)  # every copy's, for /api/metrics
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    cache: TTLCache = field(init=False)
    llm: LLMClient = field(init=False)
    pdf: PdfSandbox = field(init=False)
    sessions: LiveSessions = field(default_factory=LiveSessions)
    auth_blocked: BlockedClients = field(default_factory=BlockedClients)
    active_streams: int = 0
    socket_connections: int = 0

    def __post_init__(self) -> None:
        self.cache = TTLCache(self.settings.key_cache_ttl_s)
        self.llm = LLMClient(self.bus)
        s = self.settings
        limits = Limits(cpu_s=s.pdf_cpu_s, memory_mb=s.pdf_memory_mb, page_cpu_s=s.pdf_page_cpu_s, nice=s.pdf_nice)
        self.pdf = PdfSandbox(limits, wall_s=s.pdf_wall_s, concurrency=s.pdf_concurrency)

    @property
    def timeout(self) -> float:
        return self.settings.request_timeout_s

    # ---- auth -------------------------------------------------------------------------------------------
    async def authenticate(self, token: str | None, client: str | None = None) -> Principal | None:
        """The principal for an API key; None when the key is unknown or revoked (cached briefly). A client
        address with too many failed authentications gets RATE_LIMIT_EXCEEDED instead of a key lookup."""
        if not token:
            if self.settings.allow_anonymous:
                return Principal(user_id=ANONYMOUS_USER_ID, role="user", name="anonymous")
            return None
        digest = hash_key(token)
        hit, principal = self.cache.get(digest)
        if hit and principal is not None:
            return None if principal.expired() else principal
        if client is not None and (wait := self.auth_blocked.retry_after(client)):
            raise RateLimited(wait, "auth_failures")
        if not hit:
            try:
                principal = await asyncio.wait_for(self.store.principal_for_hash(digest), self.timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                raise PlatformError(ErrorCode.DATABASE_ERROR, f"key lookup failed: {type(err).__name__}") from None
            self.cache.put(digest, principal)
        if principal is None and client is not None:
            await self._count_auth_failure(client)
        return principal

    async def _count_auth_failure(self, client: str) -> None:
        s = self.settings
        if not s.rate_limit_enabled:
            return
        decision = await self.limiter.check([Counter("auth_failures", f"ip:{client}", s.auth_failures_per_window)])
        if not decision.allowed:
            self.metrics.rate_limited.labels("auth_failures").inc()
            self.auth_blocked.block(client, decision.retry_after_s)
            raise RateLimited(decision.retry_after_s, "auth_failures")

    async def authenticate_header(
        self, authorization: str | None, x_api_key: str | None = None, client: str | None = None
    ) -> Principal:
        token = bearer_token(authorization) or (x_api_key.strip() if x_api_key else None)
        if authorization and token is None and not x_api_key:
            raise PlatformError(ErrorCode.UNAUTHORIZED, "malformed Authorization header (use: Bearer <api key>)")
        principal = await self.authenticate(token, client)
        if principal is None:
            raise PlatformError(
                ErrorCode.UNAUTHORIZED, "invalid or revoked API key" if token else "missing API key (Bearer token)"
            )
        return principal

    async def broadcast_revocation(self, key_id: str) -> None:
        """Tell every gateway copy to drop a revoked key from its cache (best effort: the cache TTL bounds a
        lost message)."""
        await self.bus.notify(self.bus.catalog.key_revoked, KeyRevoked(key_id=key_id))

    async def broadcast_user_changed(self, user_id: str) -> None:
        """Tell every gateway copy to drop every key of a disabled (or enabled) user from its cache."""
        await self.bus.notify(self.bus.catalog.key_revoked, KeyRevoked(user_id=user_id))

    def on_key_revoked(self, notice: KeyRevoked) -> None:
        if notice.key_id:
            self.cache.drop_key_id(notice.key_id)
        if notice.user_id:
            self.cache.drop_user_id(notice.user_id)

    async def end_sessions(self, user_id: str | None = None, key_id: str | None = None) -> None:
        """Close the live sessions of a key (or of every key of a user) on this copy now and on every other
        copy over the bus. Their next action is refused anyway: every action authenticates again."""
        if user_id is None and key_id is None:
            return
        await self.sessions.end(user_id=user_id, key_id=key_id)
        await self.bus.notify(self.bus.catalog.sessions_ended, SessionsEnded(user_id=user_id, key_id=key_id))

    async def on_sessions_ended(self, notice: SessionsEnded) -> None:
        await self.sessions.end(user_id=notice.user_id, key_id=notice.key_id)

    # ---- rate limits ------------------------------------------------------------------------------------
    async def rate_limit(self, principal: Principal | None, ip: str, action: str | None) -> None:
        """Count this request in the overall bucket and the action's bucket, per key and per client IP;
        raises RATE_LIMIT_EXCEEDED (with retry_after) when any is over its limit."""
        s = self.settings
        if not s.rate_limit_enabled:
            return
        limits = s.action_limits()
        identities = []
        if principal is not None and principal.key_id:
            identities.append(f"key:{principal.key_id}")
        if s.rate_limit_per_ip or not identities:
            identities.append(f"ip:{ip}")
        buckets = ["all"] + ([action] if action else [])
        counters = [Counter(b, ident, limits[b]) for b in buckets for ident in identities]
        decision: Decision = await self.limiter.check(counters)
        if not decision.allowed:
            self.metrics.rate_limited.labels(decision.bucket or "all").inc()
            raise RateLimited(decision.retry_after_s, decision.bucket or "all")

    # ---- dialogue -----------------------------------------------------------------------------------
    async def command(self, cmd: Command) -> DiscussionView:
        return await self.bus.request(
            self.bus.catalog.dialogue_command, cmd, timeout=self.timeout, response_model=DiscussionView
        )

    def history_reader(self, user_id: str, discussion_id: str) -> HistoryReader:
        """A live listener's history from the dialogue service's event store (one request, which is also the
        ownership check: DISCUSSION_NOT_FOUND unless `user_id` owns the discussion)."""

        async def read(after_seq: int) -> list[DiscussionEvent]:
            q = DialogueQuery(kind="events", user_id=user_id, discussion_id=discussion_id, after_seq=after_seq)
            return (await self.query(q, EventsReply)).events

        return read

    async def query(self, q: DialogueQuery, model: type[M]) -> M:
        return await self.bus.request(self.bus.catalog.dialogue_query, q, timeout=self.timeout, response_model=model)

    async def request(self, subject: str, payload: BaseModel | None, model: type[M], timeout: float | None = None) -> M:
        return await self.bus.request(subject, payload, timeout=timeout or self.timeout, response_model=model)

    async def file_refs(self, user_id: str, ids: list[str]) -> list[FileRef]:
        """The caller's uploaded files as FileRefs for dialogue (NOT_FOUND for an id that is not theirs)."""
        if not ids:
            return []
        if len(ids) > self.settings.max_files_per_discussion:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "too many files")
        unique = list(dict.fromkeys(ids))
        stored = await self.store.files_of(user_id, unique)
        if len(stored) != len(unique):
            raise PlatformError(ErrorCode.NOT_FOUND, "unknown file id")
        return [FileRef(id=f.id, name=f.name, content_type=f.content_type, size=f.size, text=f.text) for f in stored]

    # ---- health -------------------------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """(all required UP, body) for GET /api/health: NATS, own db, Redis and each service over the bus."""
        t = self.settings.health_timeout_s

        async def timed(name: str, coro: Any) -> tuple[str, dict[str, Any]]:
            start = time.perf_counter()
            try:
                detail = await asyncio.wait_for(coro, t)
                body: dict[str, Any] = {"status": "UP", "latencyMs": round((time.perf_counter() - start) * 1000, 2)}
                if isinstance(detail, dict):
                    body.update(detail)
                return name, body
            except PlatformError as err:
                return name, {"status": "DOWN", "detail": err.message[:200]}
            except Exception as err:
                return name, {"status": "DOWN", "detail": (str(err) or type(err).__name__)[:200]}

        async def nats() -> None:
            if not self.bus.connected:
                raise ConnectionError("not connected to NATS")
            await self.bus.nc.flush(timeout=t)  # type: ignore[arg-type]  # seconds; nats-py annotates int, takes float

        async def database() -> None:
            async with self.store.pool.acquire(timeout=t) as conn:
                await conn.fetchval("SELECT 1", timeout=t)

        async def service(name: str) -> dict[str, Any]:
            reply = await self.bus.request(self.bus.catalog.health(name), None, timeout=t, response_model=HealthReply)
            if reply.status != "UP":
                down = [k for k, v in reply.components.items() if v.status != "UP"] or ["not ready"]
                raise ConnectionError(f"{name} reports DOWN: {', '.join(down)}")
            return {"instance": reply.instance}

        checks = [timed("nats", nats()), timed("database", database()), timed("redis", self.limiter.ping())]
        checks += [timed(svc, service(svc)) for svc in SERVICES]
        components = dict(await asyncio.gather(*checks))
        components["gateway"] = {"status": "UP" if self.rt.checks.ready else "DOWN", "instance": self.rt.instance}
        required = self.settings.required_components | {"gateway"}
        for name, comp in components.items():
            comp["required"] = name in required
        ok = all(c["status"] == "UP" for n, c in components.items() if n in required)
        body = {"status": "UP" if ok else "DOWN", "timestamp": datetime.now(UTC).isoformat(), "components": components}
        return ok, body


class RateLimited(PlatformError):
    def __init__(self, retry_after_s: int, bucket: str) -> None:
        super().__init__(ErrorCode.RATE_LIMIT_EXCEEDED, f"rate limit exceeded ({bucket}); retry in {retry_after_s}s")
        self.retry_after_s = retry_after_s
        self.bucket = bucket
