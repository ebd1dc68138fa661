"""Users and API keys as an administrator sees them: lists, key names, expiry and daily budgets, and
disabling a user (every key of a disabled user answers 401). Thin SQL over the gateway database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg
from pydantic import BaseModel, Field

from adp_common.schemas.money import Money


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    createdAt: datetime | None = None
    disabled: bool = False
    disabledAt: datetime | None = None
    activeKeys: int | None = Field(default=None, description="keys neither revoked nor expired (in lists)")


class KeyInfo(BaseModel):
    """A key without its secret (the secret is shown once, when the key is created)."""

    id: str
    userId: str
    name: str = ""
    prefix: str = ""
    createdAt: datetime | None = None
    expiresAt: datetime | None = None
    revokedAt: datetime | None = None
    lastUsedAt: datetime | None = None
    dailyBudgetUsd: Money | None = None
    active: bool = True


class UserList(BaseModel):
    users: list[UserOut]


class KeyList(BaseModel):
    keys: list[KeyInfo]


USER_COLUMNS = """u.id, u.name, u.role, u.created_at, u.disabled_at,
    (SELECT count(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked_at IS NULL
       AND (k.expires_at IS NULL OR k.expires_at > now())) AS active_keys"""
KEY_COLUMNS = """id, user_id, name, key_prefix, created_at, expires_at, revoked_at, last_used_at, daily_budget_usd,
    (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active"""


def user_out(row: asyncpg.Record) -> UserOut:
    return UserOut(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        createdAt=row["created_at"],
        disabled=row["disabled_at"] is not None,
        disabledAt=row["disabled_at"],
        activeKeys=row["active_keys"],
    )


def key_info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        userId=row["user_id"],
        name=row["name"],
        prefix=row["key_prefix"],
        createdAt=row["created_at"],
        expiresAt=row["expires_at"],
        revokedAt=row["revoked_at"],
        lastUsedAt=row["last_used_at"],
        dailyBudgetUsd=row["daily_budget_usd"],
        active=row["active"],
    )


async def list_users(pool: asyncpg.Pool, limit: int = 1000) -> list[UserOut]:
    rows = await pool.fetch(f"SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at, u.id LIMIT $1", limit)
    return [user_out(r) for r in rows]


async def get_user(pool: asyncpg.Pool, user_id: str) -> UserOut | None:
    row = await pool.fetchrow(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1", user_id)
    return user_out(row) if row is not None else None


async def set_disabled(pool: asyncpg.Pool, user_id: str, disabled: bool) -> UserOut | None:
    """Disable (keeping the first time it was disabled) or enable a user; None when there is no such user."""
    done = await pool.execute(
        "UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) ELSE NULL END WHERE id = $1",
        user_id,
        disabled,
    )
    return await get_user(pool, user_id) if done.endswith(" 1") else None


async def list_keys(pool: asyncpg.Pool, user_id: str | None = None, limit: int = 1000) -> list[KeyInfo]:
    rows = await pool.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) ORDER BY created_at, id LIMIT $2",
        user_id,
        limit,
    )
    return [key_info(r) for r in rows]


async def create_key(
    pool: asyncpg.Pool,
    key_id: str,
    user_id: str,
    key_hash: str,
    key_prefix: str,
    *,
    name: str = "",
    expires_at: datetime | None = None,
    daily_budget_usd: Decimal | None = None,
) -> KeyInfo:
    row = await pool.fetchrow(
        f"""INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, expires_at, daily_budget_usd)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}""",
        key_id,
        user_id,
        key_hash,
        key_prefix,
        name,
        expires_at,
        daily_budget_usd,
    )
    assert row is not None
    return key_info(row)
