"""Fixtures for cost-service integration tests: an in-process cost service with an injectable clock, and
helpers to publish usage records and read the ledger (real NATS, real Postgres)."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio

from adp_common import db
from adp_common.bus import Bus, wait_for
from adp_common.schemas.llm import UsageRecord
from adp_cost.app import CostApp
from adp_cost.settings import CostSettings
from adp_testing.inproc import running_service

MIGRATIONS = Path(__file__).parents[1] / "src" / "adp_cost" / "migrations"
T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class CostEnv:
    bus: Bus
    settings: CostSettings
    clock: FakeClock
    dsn: str
    apps: list[CostApp] = field(default_factory=list)
    _conn: asyncpg.Connection | None = None

    async def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn)
        return self._conn

    async def publish(self, records: list[UsageRecord], *, msg_ids: list[str] | None = None) -> None:
        subject = self.bus.catalog.usage_record
        for i, rec in enumerate(records):
            await self.bus.publish_event(subject, rec, msg_id=msg_ids[i] if msg_ids else rec.request_id)

    async def publish_fast(self, records: list[UsageRecord]) -> None:
        """Pipelined JetStream publish (many in flight), for large sets."""
        import asyncio

        sem = asyncio.Semaphore(512)

        async def one(rec: UsageRecord) -> None:
            async with sem:
                await self.bus.publish_event(self.bus.catalog.usage_record, rec, msg_id=rec.request_id, timeout=30)

        await asyncio.gather(*(one(r) for r in records))

    async def ledger_count(self) -> int:
        return int(await (await self.conn()).fetchval("SELECT count(*) FROM usage_ledger"))

    async def wait_ledger(self, n: int, timeout: float = 30.0) -> None:
        async def done() -> bool:
            return await self.ledger_count() >= n

        assert await wait_for(done, timeout, 0.05), f"ledger has {await self.ledger_count()} of {n} rows"

    async def totals(self) -> dict[str, Any]:
        c = await self.conn()
        return {
            "ledger": int(await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM usage_ledger")),
            "ledger_rows": int(await c.fetchval("SELECT count(*) FROM usage_ledger")),
            "daily": int(await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM cost_daily")),
            "daily_requests": int(await c.fetchval("SELECT coalesce(sum(requests),0) FROM cost_daily")),
            "disc": int(await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM cost_daily_discussion")),
            "disc_requests": int(await c.fetchval("SELECT coalesce(sum(requests),0) FROM cost_daily_discussion")),
            "with_disc": int(await c.fetchval("SELECT count(*) FROM usage_ledger WHERE discussion_id IS NOT NULL")),
            "with_disc_cost": int(
                await c.fetchval("SELECT coalesce(sum(cost_nusd),0) FROM usage_ledger WHERE discussion_id IS NOT NULL")
            ),
        }

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def make_record(
    *,
    provider: str = "groq",
    model: str = "llama-3.3-70b-versatile",
    input_tokens: int = 100,
    output_tokens: int = 50,
    user_id: str | None = "u1",
    discussion_id: str | None = None,
    time: datetime = T0,
    request_id: str | None = None,
    status: str = "ok",
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id or uuid.uuid4().hex,
        provider=provider,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        user_id=user_id,
        discussion_id=discussion_id,
        time=time,
        status=status,
    )


PROVIDERS = [
    ("groq", "llama-3.3-70b-versatile"),
    ("mistral", "mistral-large-latest"),
    ("openrouter", "meta/llama"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-unknown"),
    ("simulated", "sim"),
]


def random_records(n: int, *, seed: int = 7, days: int = 5, users: int = 6, discussions: int = 12) -> list[UsageRecord]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        provider, model = rnd.choice(PROVIDERS)
        out.append(
            make_record(
                provider=provider,
                model=model,
                input_tokens=rnd.randint(0, 4000),
                output_tokens=rnd.randint(0, 2000),
                user_id=rnd.choice([None, *(f"user{i}" for i in range(users))]),
                discussion_id=rnd.choice([None, *(f"d{i}" for i in range(discussions))]),
                time=T0 - timedelta(days=rnd.randrange(days), seconds=rnd.randrange(40_000)),
                status=rnd.choice(["ok", "ok", "ok", "error"]),
            )
        )
    return out


@pytest_asyncio.fixture
async def cost_env(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any) -> AsyncIterator[CostEnv]:
    settings = CostSettings(
        nats_url=nats_url,
        database_url=pg_dsn,
        subject_prefix=prefix,
        database_name=databases.name("cost"),
        cost_budget_refresh_s=0.5,
        cost_budget_debounce_s=0.01,
        heartbeat_interval_s=60,
        shutdown_grace_s=5,
        db_pool_max=4,
    )
    env = CostEnv(bus=bus, settings=settings, clock=FakeClock(), dsn=db.with_database(pg_dsn, settings.database_name))
    try:
        yield env
    finally:
        await env.close()


@contextlib.asynccontextmanager
async def run_cost(env: CostEnv, **overrides: Any) -> AsyncIterator[CostApp]:
    settings = env.settings.model_copy(update=overrides) if overrides else env.settings
    app = CostApp(settings, clock=env.clock)
    async with running_service("cost", settings, app, migrations_dir=MIGRATIONS, admin_server=False):
        env.apps.append(app)
        yield app


RecordFactory = Callable[..., UsageRecord]
