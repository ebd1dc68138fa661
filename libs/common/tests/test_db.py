from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from adp_common import db
from adp_testing.fixtures import Databases


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_migrations_apply_once_and_idempotently(tmp_path: Path, databases: Databases) -> None:
    write(tmp_path, "001_init.sql", "CREATE TABLE items (id int PRIMARY KEY);")
    write(tmp_path, "002_more.sql", "ALTER TABLE items ADD COLUMN name text;")
    conn = await databases.connect("mig")
    try:
        assert await db.migrate(conn, db.load_migrations(tmp_path)) == [1, 2]
        assert await db.migrate(conn, db.load_migrations(tmp_path)) == []
        write(tmp_path, "003_index.sql", "CREATE INDEX items_name ON items (name);")
        assert await db.migrate(conn, db.load_migrations(tmp_path)) == [3]
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [1, 2, 3]
        # an applied migration that was edited is refused
        write(tmp_path, "001_init.sql", "CREATE TABLE items (id bigint PRIMARY KEY);")
        with pytest.raises(RuntimeError, match="changed"):
            await db.migrate(conn, db.load_migrations(tmp_path))
    finally:
        await conn.close()


async def test_concurrent_starts_apply_once(tmp_path: Path, databases: Databases) -> None:
    write(tmp_path, "001_init.sql", "CREATE TABLE once (id int PRIMARY KEY); INSERT INTO once VALUES (1);")
    name = databases.name("race")
    await db.ensure_database(databases.server_dsn, name)
    conns = [await asyncpg.connect(databases.dsn("race")) for _ in range(3)]
    try:
        results = await asyncio.gather(*(db.migrate(c, db.load_migrations(tmp_path)) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 1]
        assert await conns[0].fetchval("SELECT count(*) FROM once") == 1
    finally:
        for c in conns:
            await c.close()


async def test_failed_migration_rolls_back(tmp_path: Path, databases: Databases) -> None:
    write(tmp_path, "001_bad.sql", "CREATE TABLE half (id int); SELECT * FROM missing_table;")
    conn = await databases.connect("bad")
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await db.migrate(conn, db.load_migrations(tmp_path))
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


def test_bad_migration_names(tmp_path: Path) -> None:
    write(tmp_path, "init.sql", "SELECT 1;")
    with pytest.raises(ValueError, match="001_name"):
        db.load_migrations(tmp_path)
