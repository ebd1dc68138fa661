"""Plain SQL over the gateway's own database: users, API keys, files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from adp_gateway.auth import Principal, Role


@dataclass(frozen=True)
class StoredFile:
    id: str
    user_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    text: str
    created_at: datetime | None = None


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ---- users and keys ---------------------------------------------------------------------------------
    async def create_user(self, user_id: str, name: str, role: Role) -> dict[str, object]:
        row = await self.pool.fetchrow(
            "INSERT INTO users (id, name, role) VALUES ($1, $2, $3) RETURNING id, name, role, created_at",
            user_id,
            name,
            role,
        )
        assert row is not None
        return dict(row)

    async def user_exists(self, user_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id))

    async def create_key(self, key_id: str, user_id: str, key_hash: str, key_prefix: str) -> dict[str, object]:
        row = await self.pool.fetchrow(
            """INSERT INTO api_keys (id, user_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)
               RETURNING id, user_id, key_prefix, created_at""",
            key_id,
            user_id,
            key_hash,
            key_prefix,
        )
        assert row is not None
        return dict(row)

    async def ensure_bootstrap(self, user_id: str, name: str, key_id: str, key_hash: str) -> None:
        """Idempotent (safe from every copy at once): the admin user and its key exist and are not revoked."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO users (id, name, role) VALUES ($1, $2, 'admin') "
                "ON CONFLICT (id) DO UPDATE SET role = 'admin'",
                user_id,
                name,
            )
            await conn.execute(
                """INSERT INTO api_keys (id, user_id, key_hash, key_prefix) VALUES ($1, $2, $3, 'bootstrap')
                   ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, user_id = EXCLUDED.user_id""",
                key_id,
                user_id,
                key_hash,
            )

    async def principal_for_hash(self, key_hash: str) -> Principal | None:
        """The key's principal (and mark it used), or None for an unknown or revoked key."""
        row = await self.pool.fetchrow(
            """UPDATE api_keys k SET last_used_at = now()
               FROM users u
               WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.id = k.user_id
                 AND u.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
               RETURNING k.id AS key_id, u.id AS user_id, u.role, u.name, k.expires_at""",
            key_hash,
        )
        if row is None:
            return None
        expires = row["expires_at"].timestamp() if row["expires_at"] is not None else None
        return Principal(
            user_id=row["user_id"], role=row["role"], key_id=row["key_id"], name=row["name"], expires_at=expires
        )

    async def revoke_key(self, key_id: str) -> bool:
        result = await self.pool.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key_id
        )
        return result.endswith(" 1")

    # ---- files ------------------------------------------------------------------------------------------
    async def save_file(self, f: StoredFile) -> None:
        await self.pool.execute(
            """INSERT INTO files (id, user_id, name, content_type, size, sha256, text)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            f.id,
            f.user_id,
            f.name,
            f.content_type,
            f.size,
            f.sha256,
            f.text,
        )

    async def files_of(self, user_id: str, ids: list[str]) -> list[StoredFile]:
        rows = await self.pool.fetch(
            "SELECT id, user_id, name, content_type, size, sha256, text, created_at FROM files "
            "WHERE user_id = $1 AND id = ANY($2::text[])",
            user_id,
            ids,
        )
        by_id = {r["id"]: StoredFile(**dict(r)) for r in rows}
        return [by_id[i] for i in ids if i in by_id]
