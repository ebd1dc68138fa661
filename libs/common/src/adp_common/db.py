"""asyncpg pool helper and a versioned SQL migration runner (one database per service).

Migrations are files `NNN_name.sql` in the service's `migrations/` folder, applied in order, each in its
own transaction, recorded in `schema_migrations`. An advisory lock makes concurrent starts of several
copies safe: one applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger("adp.db")

_MIGRATION_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")
_LOCK_KEY = 7_311_001  # advisory lock id for migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def with_database(dsn: str, database: str) -> str:
    """The server DSN with its database part replaced."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(server_dsn: str, database: str) -> None:
    """Create `database` if it does not exist (connects to the server's maintenance database)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", database):
        raise ValueError(f"invalid database name {database!r}")
    conn = await asyncpg.connect(with_database(server_dsn, "postgres"), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
                log.info("created database %s", database)
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):  # concurrent first starts
                pass
    finally:
        await conn.close()


async def drop_database(server_dsn: str, database: str) -> None:
    conn = await asyncpg.connect(with_database(server_dsn, "postgres"), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


def load_migrations(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name must look like 001_name.sql: {path.name}")
        migrations.append(Migration(int(m.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}")
    return migrations


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Apply pending migrations; returns the versions applied now. Idempotent; refuses an edited one."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for mig in sorted(migrations, key=lambda m: m.version):
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise RuntimeError(f"migration {mig.name} was changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            applied_now.append(mig.version)
            log.info("applied migration %s", mig.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def open_pool(
    server_dsn: str,
    database: str,
    *,
    migrations_dir: Path | None = None,
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """Ensure the database exists, apply migrations, and return a pool (statement timeout 30 s)."""
    await ensure_database(server_dsn, database)
    dsn = with_database(server_dsn, database)
    if migrations_dir is not None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await migrate(conn, load_migrations(migrations_dir))
        finally:
            await conn.close()
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=10,
        command_timeout=30,
        server_settings={"application_name": f"adp-{database}"},
        reset=_keep_session,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook replacing asyncpg's default reset, which costs one more query on every release
    (unlock all, CLOSE ALL, UNLISTEN, RESET ALL) for session state this code never leaves behind: its
    advisory locks are transaction-scoped, it never LISTENs or SETs on pooled connections. asyncpg still
    rolls back a transaction left open before calling this."""


async def ping(pool: asyncpg.Pool, timeout: float = 2.0) -> None:
    async with pool.acquire(timeout=timeout) as conn:
        await conn.fetchval("SELECT 1", timeout=timeout)
