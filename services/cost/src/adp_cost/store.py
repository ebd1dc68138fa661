"""Plain SQL over asyncpg: the ledger (batched, exactly once), rollups, budgets, budget events, breakdowns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import asyncpg

# One statement: insert the batch into the ledger (duplicates skipped by the primary key), and add exactly the
# rows that were inserted to both rollups. Rollup rows are upserted in key order so concurrent batches lock
# them in the same order.
_INSERT_BATCH = """
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::timestamptz[], $3::date[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
        $9::text[], $10::int[], $11::int[], $12::bool[], $13::text[], $14::text[], $15::float8[],
        $16::numeric[], $17::numeric[], $18::text[], $19::bigint[], $20::bigint[], $21::text[]
    ) AS t(request_id, occurred_at, day, provider, model, user_id, discussion_id, persona, route, input_tokens,
           output_tokens, estimated, status, error_code, latency_ms, input_price, output_price, price_source,
           cost_nusd, stream_seq, key_id)
), ins AS (
    INSERT INTO usage_ledger (request_id, occurred_at, day, provider, model, user_id, discussion_id, persona, route,
                              input_tokens, output_tokens, estimated, status, error_code, latency_ms, input_price,
                              output_price, price_source, cost_nusd, stream_seq, key_id)
    SELECT * FROM input
    ON CONFLICT (request_id) DO NOTHING
    RETURNING day, provider, model, coalesce(user_id, '') AS user_key, coalesce(discussion_id, '') AS discussion_key,
              coalesce(key_id, '') AS key_key, cost_nusd, input_tokens, output_tokens, (status = 'error')::int AS err
), daily AS (
    INSERT INTO cost_daily AS c (day, provider, model, user_key, cost_nusd, input_tokens, output_tokens, requests,
                                 errors)
    SELECT day, provider, model, user_key, sum(cost_nusd), sum(input_tokens), sum(output_tokens), count(*), sum(err)
    FROM ins GROUP BY day, provider, model, user_key ORDER BY day, provider, model, user_key
    ON CONFLICT (day, provider, model, user_key) DO UPDATE SET
        cost_nusd = c.cost_nusd + EXCLUDED.cost_nusd,
        input_tokens = c.input_tokens + EXCLUDED.input_tokens,
        output_tokens = c.output_tokens + EXCLUDED.output_tokens,
        requests = c.requests + EXCLUDED.requests,
        errors = c.errors + EXCLUDED.errors
    RETURNING 1
), disc AS (
    INSERT INTO cost_daily_discussion AS d (day, discussion_key, user_key, cost_nusd, input_tokens, output_tokens,
                                            requests)
    SELECT day, discussion_key, user_key, sum(cost_nusd), sum(input_tokens), sum(output_tokens), count(*)
    FROM ins WHERE discussion_key <> '' GROUP BY day, discussion_key, user_key ORDER BY day, discussion_key, user_key
    ON CONFLICT (day, discussion_key, user_key) DO UPDATE SET
        cost_nusd = d.cost_nusd + EXCLUDED.cost_nusd,
        input_tokens = d.input_tokens + EXCLUDED.input_tokens,
        output_tokens = d.output_tokens + EXCLUDED.output_tokens,
        requests = d.requests + EXCLUDED.requests
    RETURNING 1
), bymodel AS (
    INSERT INTO cost_daily_model AS m (day, provider, model, cost_nusd, input_tokens, output_tokens, requests, errors)
    SELECT day, provider, model, sum(cost_nusd), sum(input_tokens), sum(output_tokens), count(*), sum(err)
    FROM ins GROUP BY day, provider, model ORDER BY day, provider, model
    ON CONFLICT (day, provider, model) DO UPDATE SET
        cost_nusd = m.cost_nusd + EXCLUDED.cost_nusd,
        input_tokens = m.input_tokens + EXCLUDED.input_tokens,
        output_tokens = m.output_tokens + EXCLUDED.output_tokens,
        requests = m.requests + EXCLUDED.requests,
        errors = m.errors + EXCLUDED.errors
    RETURNING 1
), byuser AS (
    INSERT INTO cost_daily_by_user AS u (day, user_key, cost_nusd, input_tokens, output_tokens, requests)
    SELECT day, user_key, sum(cost_nusd), sum(input_tokens), sum(output_tokens), count(*)
    FROM ins GROUP BY day, user_key ORDER BY day, user_key
    ON CONFLICT (day, user_key) DO UPDATE SET
        cost_nusd = u.cost_nusd + EXCLUDED.cost_nusd,
        input_tokens = u.input_tokens + EXCLUDED.input_tokens,
        output_tokens = u.output_tokens + EXCLUDED.output_tokens,
        requests = u.requests + EXCLUDED.requests
    RETURNING 1
), bykey AS (
    INSERT INTO cost_daily_by_key AS k (day, key_key, cost_nusd, input_tokens, output_tokens, requests)
    SELECT day, key_key, sum(cost_nusd), sum(input_tokens), sum(output_tokens), count(*)
    FROM ins WHERE key_key <> '' GROUP BY day, key_key ORDER BY day, key_key
    ON CONFLICT (day, key_key) DO UPDATE SET
        cost_nusd = k.cost_nusd + EXCLUDED.cost_nusd,
        input_tokens = k.input_tokens + EXCLUDED.input_tokens,
        output_tokens = k.output_tokens + EXCLUDED.output_tokens,
        requests = k.requests + EXCLUDED.requests
    RETURNING 1
)
SELECT day, provider, model, user_key, key_key, cost_nusd FROM ins
"""


@dataclass(frozen=True)
class LedgerRow:
    request_id: str
    occurred_at: datetime
    day: date
    provider: str
    model: str
    user_id: str | None
    discussion_id: str | None
    persona: str | None
    route: str | None
    input_tokens: int
    output_tokens: int
    estimated: bool
    status: str
    error_code: str | None
    latency_ms: float
    input_price: Decimal
    output_price: Decimal
    price_source: str
    cost_nusd: int
    stream_seq: int | None
    key_id: str | None = None


@dataclass(frozen=True)
class Inserted:
    day: date
    provider: str
    model: str
    user_key: str
    cost_nusd: int
    key_key: str = ""


async def insert_batch(conn: asyncpg.Connection, rows: Sequence[LedgerRow]) -> list[Inserted]:
    """Insert rows (unique request ids expected) and update rollups; returns the rows actually inserted."""
    if not rows:
        return []
    cols = list(zip(*(_as_tuple(r) for r in rows), strict=True))
    records = await conn.fetch(_INSERT_BATCH, *cols)
    return [Inserted(r["day"], r["provider"], r["model"], r["user_key"], r["cost_nusd"], r["key_key"]) for r in records]


def _as_tuple(r: LedgerRow) -> tuple[object, ...]:
    return (
        r.request_id,
        r.occurred_at,
        r.day,
        r.provider,
        r.model,
        r.user_id,
        r.discussion_id,
        r.persona,
        r.route,
        r.input_tokens,
        r.output_tokens,
        r.estimated,
        r.status,
        r.error_code,
        r.latency_ms,
        r.input_price,
        r.output_price,
        r.price_source,
        r.cost_nusd,
        r.stream_seq,
        r.key_id,
    )


# ---- spend and budgets ------------------------------------------------------------------------------------


async def global_spend(conn: asyncpg.Connection | asyncpg.Pool, day: date) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(cost_nusd), 0) FROM cost_daily_model WHERE day = $1", day))


async def user_spend(conn: asyncpg.Connection | asyncpg.Pool, day: date, user_ids: Sequence[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT user_key, sum(cost_nusd) AS s FROM cost_daily_by_user WHERE user_key = ANY($2::text[]) AND day = $1"
        " GROUP BY user_key",
        day,
        list(user_ids),
    )
    out = dict.fromkeys(user_ids, 0)
    out.update({r["user_key"]: int(r["s"]) for r in rows})
    return out


async def get_budgets(conn: asyncpg.Connection | asyncpg.Pool, scopes: Sequence[str]) -> dict[str, tuple[int, float]]:
    rows = await conn.fetch("SELECT scope, limit_nusd, threshold FROM budgets WHERE scope = ANY($1::text[])", scopes)
    return {r["scope"]: (int(r["limit_nusd"]), float(r["threshold"])) for r in rows}


async def user_budget_scopes(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """Every stored budget of a user or of an API key."""
    rows = await conn.fetch("SELECT scope FROM budgets WHERE scope LIKE 'user:%' OR scope LIKE 'key:%'")
    return [r["scope"] for r in rows]


async def key_spend(conn: asyncpg.Connection | asyncpg.Pool, day: date, key_ids: Sequence[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT key_key, sum(cost_nusd) AS s FROM cost_daily_by_key WHERE key_key = ANY($2::text[]) AND day = $1"
        " GROUP BY key_key",
        day,
        list(key_ids),
    )
    return {r["key_key"]: int(r["s"]) for r in rows}


async def set_budget(conn: asyncpg.Connection | asyncpg.Pool, scope: str, limit_nusd: int, threshold: float) -> None:
    await conn.execute(
        """INSERT INTO budgets (scope, limit_nusd, threshold) VALUES ($1, $2, $3)
           ON CONFLICT (scope) DO UPDATE SET limit_nusd = EXCLUDED.limit_nusd, threshold = EXCLUDED.threshold,
                                             updated_at = now()""",
        scope,
        limit_nusd,
        threshold,
    )


async def record_event(
    conn: asyncpg.Connection | asyncpg.Pool,
    scope: str,
    day: date,
    kind: str,
    spent_nusd: int,
    limit_nusd: int,
    percentage: float,
) -> bool:
    """Record a budget event; True only for the one caller (across copies and restarts) that recorded it."""
    inserted = await conn.fetchval(
        """INSERT INTO budget_events (scope, day, kind, spent_nusd, limit_nusd, percentage)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1""",
        scope,
        day,
        kind,
        spent_nusd,
        limit_nusd,
        percentage,
    )
    return inserted is not None


async def mark_published(conn: asyncpg.Connection | asyncpg.Pool, scope: str, day: date, kind: str) -> None:
    await conn.execute(
        "UPDATE budget_events SET published_at = now() WHERE scope = $1 AND day = $2 AND kind = $3", scope, day, kind
    )


async def unpublished_events(conn: asyncpg.Connection | asyncpg.Pool, older_than_s: float) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT scope, day, kind, spent_nusd, limit_nusd, percentage FROM budget_events
           WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
           ORDER BY created_at LIMIT 100""",
        older_than_s,
    )


# ---- breakdowns (from the rollups) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Agg:
    key: str
    cost_nusd: int
    input_tokens: int
    output_tokens: int
    requests: int


def _aggs(rows: list[asyncpg.Record]) -> list[Agg]:
    return [Agg(r["k"], int(r["cost"]), int(r["tin"]), int(r["tout"]), int(r["n"])) for r in rows]


_SUMS = "sum(cost_nusd) AS cost, sum(input_tokens) AS tin, sum(output_tokens) AS tout, sum(requests) AS n"


async def breakdown(
    conn: asyncpg.Connection | asyncpg.Pool,
    by: str,
    start: date,
    end: date,
    user_id: str | None = None,
    limit: int | None = None,
) -> list[Agg]:
    """Spend grouped by provider | model | user | discussion over [start, end], optionally for one user,
    most expensive first."""
    key = {
        "provider": "provider",
        "model": "provider || '/' || model",
        "user": "user_key",
        "key": "key_key",
        "discussion": "discussion_key",
    }[by]
    if by == "key" and user_id is not None:
        # one user's keys: the ledger knows which user each key belongs to
        sql = (
            "SELECT key_id AS k, sum(cost_nusd) AS cost, sum(input_tokens) AS tin, sum(output_tokens) AS tout,"
            " count(*) AS n FROM usage_ledger"
            " WHERE day BETWEEN $1 AND $2 AND user_id = $3 AND key_id IS NOT NULL GROUP BY 1 ORDER BY cost DESC, k"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return _aggs(await conn.fetch(sql, start, end, user_id))
    if by == "discussion":
        table = "cost_daily_discussion"
    elif by == "key":
        table = "cost_daily_by_key"
    elif by == "user":
        table = "cost_daily_by_user"
    else:  # provider / model: the small table unless one user's breakdown is asked for
        table = "cost_daily" if user_id is not None else "cost_daily_model"
    where = "day BETWEEN $1 AND $2" + (" AND user_key = $3" if user_id is not None else "")
    args: list[object] = [start, end] + ([user_id] if user_id is not None else [])
    sql = f"SELECT {key} AS k, {_SUMS} FROM {table} WHERE {where} GROUP BY 1 ORDER BY cost DESC, k"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return _aggs(await conn.fetch(sql, *args))


async def daily(
    conn: asyncpg.Connection | asyncpg.Pool, start: date, end: date, user_id: str | None = None
) -> list[asyncpg.Record]:
    where = "day BETWEEN $1 AND $2" + (" AND user_key = $3" if user_id is not None else "")
    args: list[object] = [start, end] + ([user_id] if user_id is not None else [])
    table = "cost_daily" if user_id is not None else "cost_daily_model"
    return await conn.fetch(
        f"SELECT day, provider, sum(cost_nusd) AS cost, sum(requests) AS n FROM {table} WHERE {where}"
        " GROUP BY day, provider ORDER BY day, provider",
        *args,
    )


async def user_total(conn: asyncpg.Connection | asyncpg.Pool, user_id: str, start: date, end: date) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(cost_nusd), 0) FROM cost_daily_by_user WHERE user_key = $1 AND day BETWEEN $2 AND $3",
            user_id,
            start,
            end,
        )
    )


async def ledger_count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM usage_ledger"))
