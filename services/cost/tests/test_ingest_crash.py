"""A cost process killed (SIGKILL) in the middle of ingesting loses nothing and counts nothing twice."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from adp_common import db
from adp_common.bus import Bus, wait_for
from adp_cost.pricing import load_price_table

from .conftest import random_records


@pytest.mark.slow
async def test_killed_mid_batch_loses_nothing_and_double_counts_nothing(
    processes: object, bus: Bus, pg_dsn: str, prefix: str
) -> None:
    n = 20_000
    recs = random_records(n, seed=5, days=3)
    prices = load_price_table(environ={})
    expected = sum(prices.price(r.provider, r.model, r.input_tokens, r.output_tokens).cost_nusd for r in recs)
    await bus.ensure_streams(["USAGE", "OPS"])
    sem = asyncio.Semaphore(512)

    async def pub(rec: object) -> None:
        async with sem:
            await bus.publish_event(bus.catalog.usage_record, rec, msg_id=rec.request_id, timeout=30)

    await asyncio.gather(*(pub(r) for r in recs))  # a backlog the service starts on

    env = {"ADP_COST_ACK_WAIT_S": "2", "ADP_COST_INGEST_BATCH": "250"}
    (first,) = await processes.start_healthy(["cost"], extra_env=env)
    conn = await asyncpg.connect(db.with_database(pg_dsn, f"cost_{prefix}"))
    try:

        async def count() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM usage_ledger"))

        async def started() -> bool:
            return await count() >= 1000

        assert await wait_for(started, 30, interval=0.005)
        processes.kill(first)
        at_kill = await count()
        assert 0 < at_kill < n, at_kill

        await processes.start_healthy(["cost"], extra_env=env)

        async def complete() -> bool:
            return await count() >= n

        assert await wait_for(complete, 60, interval=0.1), await count()
        ledger = await conn.fetchrow("SELECT count(*) AS n, sum(cost_nusd) AS c FROM usage_ledger")
        rollup = await conn.fetchrow("SELECT sum(requests) AS n, sum(cost_nusd) AS c FROM cost_daily")
        assert (ledger["n"], ledger["c"]) == (n, expected)
        assert (rollup["n"], rollup["c"]) == (n, expected)
        disc = await conn.fetchrow("SELECT sum(requests) AS n, sum(cost_nusd) AS c FROM cost_daily_discussion")
        with_disc = await conn.fetchrow(
            "SELECT count(*) AS n, sum(cost_nusd) AS c FROM usage_ledger WHERE discussion_id IS NOT NULL"
        )
        assert (disc["n"], disc["c"]) == (with_disc["n"], with_disc["c"])
    finally:
        await conn.close()
