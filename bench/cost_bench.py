"""Cost service benchmark: usage-record ingest rate (through JetStream into the ledger) and breakdown query time
over a 30-day range with 1M ledger rows.

    .venv/bin/python bench/cost_bench.py                 # both parts, defaults below
    .venv/bin/python bench/cost_bench.py --ingest 50000 --rows 1000000

Ingest: a real cost process (separate OS process, default settings) consumes records published by this process.
  * backlog: N records are published first, then the service starts and drains them;
  * live: with the service running, N more records are published as fast as possible;
  rate = records / (last ledger commit - first ledger commit) for backlog, and records / (last commit - first
  publish) for live, using the ledger's server-side `recorded_at`.
Queries: 1M ledger rows generated straight into a scratch database with COPY, rollups built from them, then each
breakdown for a 30-day range timed (median of repeats) through the service's own query code; the same by-provider
aggregate straight over the ledger is timed for comparison. Scratch databases and streams are dropped afterwards.
Needs NATS (ADP_NATS_URL) and PostgreSQL (ADP_DATABASE_URL); defaults are the local servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from adp_cli.procs import ProcessManager
from adp_common import db
from adp_common.bus import Bus, wait_for
from adp_common.envelope import wrap
from adp_common.schemas.cost import CostQuery
from adp_common.schemas.llm import UsageRecord
from adp_cost import queries
from adp_cost.budget import Evaluation
from adp_cost.ingest import to_row
from adp_cost.main import MIGRATIONS
from adp_cost.pricing import load_price_table

NATS_URL = os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222")
PG_DSN = os.environ.get("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
USERS = 1000  # query part: distinct users
CALLS_PER_DISCUSSION = 30
PROVIDERS = [
    ("groq", ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"]),
    ("mistral", ["mistral-large-latest", "mistral-small-latest"]),
    ("openrouter", ["meta/llama-3-70b", "qwen/qwen-2.5"]),
    ("openai", ["gpt-4o", "gpt-4o-mini"]),
    ("anthropic", ["claude-3-5-haiku-latest", "claude-sonnet-4-0"]),
    ("simulated", ["simulated-1"]),
]


def record(
    rnd: random.Random, when: datetime, user_id: str | None = None, discussion_id: str | None = None
) -> UsageRecord:
    provider, models = rnd.choice(PROVIDERS)
    return UsageRecord(
        request_id=uuid.uuid4().hex,
        user_id=user_id or f"user{rnd.randrange(200)}",
        discussion_id=discussion_id or f"disc{rnd.randrange(5000)}",
        persona=rnd.choice(["analyzer", "solver", "moderator"]),
        provider=provider,
        model=rnd.choice(models),
        input_tokens=rnd.randint(50, 4000),
        output_tokens=rnd.randint(20, 1500),
        latency_ms=rnd.uniform(100, 3000),
        time=when,
    )


def encode_all(recs: list[UsageRecord]) -> list[tuple[bytes, str]]:
    """Envelope-encode records up front (what the router puts on the wire), so publishing measures the bus."""
    return [(wrap(r, source="cost-bench").model_dump_json().encode(), r.request_id) for r in recs]


async def publish_all(bus: Bus, encoded: list[tuple[bytes, str]]) -> float:
    """Publish pre-encoded records to the USAGE stream subject as fast as the connection takes them (core publish,
    captured by the stream; Nats-Msg-Id set as the router does), flushing every 1000; returns the rate."""
    subject = bus.catalog.usage_record
    t0 = time.perf_counter()
    for i, (data, msg_id) in enumerate(encoded, 1):
        await bus.nc.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
        if i % 1000 == 0:
            await bus.nc.flush(timeout=30)
    await bus.nc.flush(timeout=30)
    return len(encoded) / (time.perf_counter() - t0)


async def stream_count(bus: Bus) -> int:
    info = await bus.js.stream_info(bus.catalog.stream_name("USAGE"))
    return int(info.state.messages)


async def _stream_has(bus: Bus, n: int) -> bool:
    return await stream_count(bus) >= n


async def bench_ingest(n: int, service_env: dict[str, str] | None = None) -> dict[str, float]:
    prefix = "bench" + uuid.uuid4().hex[:8]
    bus = await Bus.connect(NATS_URL, prefix=prefix, name="cost-bench")
    dbname = f"cost_{prefix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    env.update(
        {
            "ADP_NATS_URL": NATS_URL,
            "ADP_DATABASE_URL": PG_DSN,
            "ADP_SUBJECT_PREFIX": prefix,
            "ADP_DATABASE_NAME": dbname,
            "ADP_LOG_LEVEL": "WARNING",
            **(service_env or {}),
        }
    )
    manager = ProcessManager(env=env, log_dir=Path(tempfile.mkdtemp(prefix="cost-bench-")))
    conn: asyncpg.Connection | None = None
    rnd = random.Random(1)
    now = datetime.now(UTC)
    try:
        await bus.ensure_streams(["USAGE", "OPS"])
        backlog = encode_all([record(rnd, now) for _ in range(n)])
        pub_rate = await publish_all(bus, backlog)
        assert await wait_for(lambda: _stream_has(bus, n), 60), "stream did not store every record"
        print(f"published {n} usage records at {pub_rate:,.0f}/s (backlog)")
        proc = manager.start("cost")
        await manager.wait_healthy([proc], timeout=60)
        conn = await asyncpg.connect(db.with_database(PG_DSN, dbname))

        async def count() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM usage_ledger"))

        async def reached(target: int) -> bool:
            return await count() >= target

        assert await wait_for(lambda: reached(n), 300, 0.1), "backlog not drained"
        first, last = await conn.fetchrow("SELECT min(recorded_at), max(recorded_at) FROM usage_ledger")
        backlog_rate = n / max((last - first).total_seconds(), 1e-6)
        print(f"backlog drain: {n} records in {(last - first).total_seconds():.2f}s = {backlog_rate:,.0f} records/s")

        live = encode_all([record(rnd, now) for _ in range(n)])
        t_start = datetime.now(UTC)
        live_pub = await publish_all(bus, live)
        assert await wait_for(lambda: reached(2 * n), 300, 0.1), "live records not ingested"
        last2 = await conn.fetchval("SELECT max(recorded_at) FROM usage_ledger")
        live_s = (last2 - t_start).total_seconds()
        live_rate = n / live_s
        print(
            f"live: published at {live_pub:,.0f}/s; all {n} in the ledger {live_s:.2f}s after the first publish"
            f" = {live_rate:,.0f} records/s end to end"
        )
        dup = await conn.fetchval("SELECT count(*) - count(DISTINCT request_id) FROM usage_ledger")
        roll = await conn.fetchval("SELECT sum(requests) FROM cost_daily")
        assert dup == 0 and roll == 2 * n, (dup, roll)
        return {"backlog_rate": backlog_rate, "live_rate": live_rate}
    finally:
        if conn is not None:
            await conn.close()
        await asyncio.to_thread(manager.stop_all, 10.0)
        for info in await bus.js.streams_info():
            if info.config.name.startswith(bus.catalog.stream_name("")) or info.config.name.startswith(
                "KV_" + bus.catalog.bucket("")
            ):
                await bus.js.delete_stream(info.config.name)
        await bus.close(grace=1)
        await db.drop_database(PG_DSN, dbname)


async def bench_queries(rows: int, repeats: int) -> dict[str, float]:
    dbname = "cost_bench_q_" + uuid.uuid4().hex[:8]
    prices = load_price_table(environ={})
    pool = await db.open_pool(PG_DSN, dbname, migrations_dir=MIGRATIONS, max_size=2)
    today = datetime.now(UTC).date()
    try:
        t0 = time.perf_counter()
        rnd = random.Random(2)
        chunk = 100_000
        cols = [
            "request_id", "occurred_at", "day", "provider", "model", "user_id", "discussion_id", "persona", "route",
            "input_tokens", "output_tokens", "estimated", "status", "error_code", "latency_ms", "input_price",
            "output_price", "price_source", "cost_nusd", "stream_seq",
        ]  # fmt: skip
        base = datetime.combine(today, datetime.min.time(), UTC)
        async with pool.acquire() as conn:
            for start in range(0, rows, chunk):
                batch = []
                for i in range(start, min(start + chunk, rows)):
                    if i % CALLS_PER_DISCUSSION == 0:  # a discussion: one user, one day, ~30 calls
                        disc_user = f"user{rnd.randrange(USERS)}"
                        disc_id = uuid.uuid4().hex
                        disc_start = base - timedelta(seconds=rnd.randrange(60 * 86400))  # 60 days of history
                    when = disc_start + timedelta(seconds=10 * (i % CALLS_PER_DISCUSSION))
                    r = to_row(record(rnd, when, disc_user, disc_id), prices, i)
                    batch.append(
                        (
                            r.request_id, r.occurred_at, r.day, r.provider, r.model, r.user_id, r.discussion_id,
                            r.persona, r.route, r.input_tokens, r.output_tokens, r.estimated, r.status, r.error_code,
                            r.latency_ms, r.input_price, r.output_price, r.price_source, r.cost_nusd, r.stream_seq,
                        )
                    )  # fmt: skip
                await conn.copy_records_to_table("usage_ledger", records=batch, columns=cols)
            gen_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            await conn.execute(
                """INSERT INTO cost_daily SELECT day, provider, model, coalesce(user_id, ''), sum(cost_nusd),
                   sum(input_tokens), sum(output_tokens), count(*), sum((status = 'error')::int)
                   FROM usage_ledger GROUP BY 1, 2, 3, 4"""
            )
            await conn.execute(
                """INSERT INTO cost_daily_discussion SELECT day, discussion_id, coalesce(user_id, ''), sum(cost_nusd),
                   sum(input_tokens), sum(output_tokens), count(*)
                   FROM usage_ledger WHERE discussion_id IS NOT NULL GROUP BY 1, 2, 3"""
            )
            await conn.execute(
                """INSERT INTO cost_daily_model SELECT day, provider, model, sum(cost_nusd), sum(input_tokens),
                   sum(output_tokens), sum(requests), sum(errors) FROM cost_daily GROUP BY 1, 2, 3"""
            )
            await conn.execute(
                """INSERT INTO cost_daily_by_user SELECT day, user_key, sum(cost_nusd), sum(input_tokens),
                   sum(output_tokens), sum(requests) FROM cost_daily GROUP BY 1, 2"""
            )
            await conn.execute("ANALYZE")
            n_daily = await conn.fetchval("SELECT count(*) FROM cost_daily")
            n_disc = await conn.fetchval("SELECT count(*) FROM cost_daily_discussion")
            n_model = await conn.fetchval("SELECT count(*) FROM cost_daily_model")
            n_user = await conn.fetchval("SELECT count(*) FROM cost_daily_by_user")
        print(
            f"generated {rows:,} ledger rows with COPY in {gen_s:.1f}s; rollups built in"
            f" {time.perf_counter() - t1:.1f}s (rows: {n_daily:,} day/provider/model/user, {n_model:,} day/model,"
            f" {n_user:,} day/user, {n_disc:,} day/discussion)"
        )
        start_d, end_d = today - timedelta(days=29), today
        ev = Evaluation("global", today, 0, 10 * 10**9, 0.8)
        results: dict[str, float] = {}

        async def timed(label: str, fn) -> None:
            await fn()  # warm
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                await fn()
                samples.append((time.perf_counter() - t) * 1000)
            results[label] = statistics.median(samples)
            p95 = sorted(samples)[int(0.95 * len(samples)) - 1]
            print(f"  {label:<42} median {results[label]:7.2f} ms   p95 {p95:7.2f} ms")

        print(f"30-day range {start_d} .. {end_d} (median of {repeats}):")
        for kind in ("summary", "by_provider", "by_model", "by_user", "by_discussion", "daily"):
            q = CostQuery(kind=kind, start_date=start_d, end_date=end_d)

            async def run(q: CostQuery = q) -> None:
                await queries.answer(pool, q, today=today, global_budget=ev, row_limit=1000)

            await timed(f"{kind} (rollup)", run)
        uq = CostQuery(kind="summary", start_date=start_d, end_date=end_d, user_id="user7")

        async def run_user() -> None:
            await queries.answer(pool, uq, today=today, global_budget=ev, row_limit=1000)

        await timed("summary for one user (rollup)", run_user)

        async def raw() -> None:
            await pool.fetch(
                "SELECT provider, sum(cost_nusd) FROM usage_ledger WHERE day BETWEEN $1 AND $2 GROUP BY provider",
                start_d,
                end_d,
            )

        await timed("by_provider straight over the ledger", raw)
        return results
    finally:
        await pool.close()
        await db.drop_database(PG_DSN, dbname)


async def amain() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ingest", type=int, default=50_000, help="records per ingest phase (0 skips)")
    p.add_argument("--rows", type=int, default=1_000_000, help="ledger rows for the query part (0 skips)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, help="ADP_COST_INGEST_BATCH for the service (default: its default)")
    p.add_argument("--workers", type=int, help="ADP_COST_INGEST_WORKERS for the service")
    a = p.parse_args()
    ok = True
    if a.ingest:
        svc_env = {}
        if a.batch:
            svc_env["ADP_COST_INGEST_BATCH"] = str(a.batch)
        if a.workers:
            svc_env["ADP_COST_INGEST_WORKERS"] = str(a.workers)
        r = await bench_ingest(a.ingest, svc_env)
        ok &= r["backlog_rate"] >= 5000 and r["live_rate"] >= 5000
    if a.rows:
        q = await bench_queries(a.rows, a.repeats)
        ok &= q["summary (rollup)"] < 50
    print("targets (>= 5,000 records/s, 30-day summary < 50 ms):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(amain()))
