"""The whole platform as separate OS processes, for end-to-end and fault tests.

`Platform` starts N copies of every service (llm-router, cost, alerts, dialogue, gateway) against the
test's NATS/PostgreSQL/Redis, isolated by a subject prefix and database suffix, and drives them only
through the gateway's HTTP API, as a client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from adp_cli.procs import START_ORDER, Proc
from adp_client import ApiError, AsyncClient, Follow
from adp_testing.procs import ServiceProcesses

ADMIN_KEY = "adp_e2e_bootstrap_admin_key_0123456789"
HIGH = "100000"


def fast_env(**extra: str) -> dict[str, str]:
    """Settings that make a whole discussion take seconds, not minutes."""
    env = {
        "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
        "ADP_SIMULATED_TTFT_MS": "5",
        "ADP_SIMULATED_TOKENS_PER_S": "3000",
        "ADP_MAX_ACTIVE_DISCUSSIONS": "50",
        "ADP_RATE_LIMIT_REQUESTS": HIGH,
        "ADP_RATE_LIMIT_START": HIGH,
        "ADP_RATE_LIMIT_PROCEED": HIGH,
        "ADP_RATE_LIMIT_ANSWERS": HIGH,
        "ADP_RATE_LIMIT_QUESTIONS": HIGH,
        "ADP_RATE_LIMIT_SUMMARY": HIGH,
        "ADP_AUTH_FAILURES_PER_WINDOW": HIGH,
        "ADP_TURN_MAX_TOKENS": "200",
        "ADP_SSE_HEARTBEAT_S": "1",
        "ADP_REQUEST_STATS_INTERVAL_S": "1",
        "ADP_ALERTS_EVAL_INTERVAL_S": "0.5",
        "ADP_SHUTDOWN_GRACE_S": "5",
    }
    env.update(extra)
    return env


@dataclass
class Platform:
    procs: ServiceProcesses
    prefix: str
    nats_url: str
    env: dict[str, str] = field(default_factory=dict)
    started: list[Proc] = field(default_factory=list)

    def copies(self, service: str) -> list[Proc]:
        return [p for p in self.started if p.service == service and p.alive()]

    @property
    def gateways(self) -> list[str]:
        return [p.url for p in self.copies("gateway")]

    def client(self, key: str = ADMIN_KEY, gateway: int = 0, timeout: float = 20) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateways[gateway], headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def api(self, key: str = ADMIN_KEY, gateway: int = 0, timeout: float = 20) -> AsyncClient:
        """The typed client (adp_client) on one gateway copy."""
        return AsyncClient(self.gateways[gateway], key, timeout=timeout)

    async def new_user(self, name: str, role: str = "user") -> tuple[str, str]:
        async with self.client() as admin:
            r = await admin.post("/api/admin/users", json={"name": name, "role": role})
            assert r.status_code == 201, r.text
            uid = r.json()["id"]
            r = await admin.post(f"/api/admin/users/{uid}/keys")
            assert r.status_code == 201, r.text
            return uid, r.json()["key"]

    async def start_discussion(self, key: str, topic: str) -> str:
        async with self.client(key) as c:
            r = await c.post("/api/discussions", json={"topic": topic})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

    async def health(self) -> int:
        """The status of `/api/health` on the first gateway copy (0: no answer)."""
        try:
            async with self.client(ADMIN_KEY, timeout=5) as c:
                return (await c.get("/api/health")).status_code
        except httpx.HTTPError:
            return 0

    async def wait_health(self, status: int, timeout: float) -> float:
        """Wait until `/api/health` answers `status`; the seconds it took."""
        start = time.monotonic()
        while (got := await self.health()) != status:
            assert time.monotonic() - start < timeout, f"/api/health stayed {got}, expected {status}"
            await asyncio.sleep(0.2)
        return time.monotonic() - start

    async def proceed(self, key: str, discussion_id: str, timeout: float = 60) -> None:
        """Proceed, retrying while the previous step still runs (409) or services recover (503)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with self.client(key) as c:
                    r = await c.post(f"/api/discussions/{discussion_id}/proceed")
                if r.status_code == 200:
                    return
                assert r.status_code in (409, 503), r.text
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "proceed never accepted"
            await asyncio.sleep(0.3)

    def kill(self, proc: Proc) -> None:
        self.procs.kill(proc)

    async def restart(self, proc: Proc) -> Proc:
        """Start a fresh copy of the same service (after a kill) and wait for it to be healthy."""
        new = self.procs.start(proc.service, self.env)
        self.started.append(new)
        await self.procs.manager.wait_healthy([new], timeout=60)
        return new


@contextlib.asynccontextmanager
async def running_platform(
    nats_url: str, pg_dsn: str, *, replicas: int = 2, env: dict[str, str] | None = None, prefix: str | None = None
) -> AsyncIterator[Platform]:
    from adp_testing.fixtures import cleanup_prefix

    prefix = prefix or "e" + uuid.uuid4().hex[:10]
    procs = ServiceProcesses(nats_url=nats_url, pg_dsn=pg_dsn, prefix=prefix)
    extra = fast_env(**(env or {}))
    platform = Platform(procs=procs, prefix=prefix, nats_url=nats_url, env=extra)
    try:
        # Start services in dependency order; copies of one service start together.
        for service in START_ORDER:
            batch = [procs.start(service, extra) for _ in range(replicas)]
            platform.started += batch
        await procs.manager.wait_healthy(platform.started, timeout=90)
        yield platform
    finally:
        await procs.stop_all()
        await procs.drop_databases()
        await cleanup_prefix(nats_url, prefix)


class EventLog:
    """Follows a discussion's SSE stream in the background, resuming with Last-Event-ID (optionally on
    another gateway) whenever the connection drops, and records what a client would see."""

    def __init__(self, platform: Platform, key: str, discussion_id: str) -> None:
        self.platform = platform
        self.key = key
        self.did = discussion_id
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() at which each of `events` arrived
        self.last_id: int | None = None
        self.follow = Follow()  # the resume point (Last-Event-ID), kept across gateways
        self.reconnects = 0
        self.gateway = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> EventLog:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while not self.follow.ended:
            urls = self.platform.gateways
            url = urls[self.gateway % len(urls)] if urls else None
            if url is None:
                await asyncio.sleep(0.2)
                continue
            try:
                async with AsyncClient(url, self.key) as client:
                    events = client.events(self.did, follow=self.follow, reconnect=False, read_timeout=30)
                    async for ev in events:
                        self.last_id = self.follow.last_event_id
                        data = {**ev.data.model_dump(mode="json"), "discussionId": ev.discussionId}
                        self.events.append({"event": ev.event, "data": data, **({"id": ev.id} if ev.id else {})})
                        self.times.append(time.monotonic())
                        self._changed.set()
            except ApiError:
                pass
            if self.follow.ended:
                return  # the discussion is over: the server has closed the stream for good
            # Dropped (gateway killed, network): resume on the next gateway.
            self.reconnects += 1
            self.gateway += 1
            await asyncio.sleep(0.2)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e.get("event") for e in self.events][-15:]
                raise TimeoutError(f"{what} not met in {timeout}s; last events: {seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def wait_for(self, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        await self.wait_until(lambda: len(self.named(name)) >= count, timeout, f"{count} x {name}")
        return self.named(name)

    def durable_ids(self) -> list[int]:
        return [e["id"] for e in self.events if "id" in e]
