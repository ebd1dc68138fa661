"""Backup and restore round trips against the real PostgreSQL and NATS JetStream servers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from nats.js.errors import NotFoundError

from adp_cli import backup
from adp_common import db
from adp_common.bus import Bus
from adp_common.schemas.llm import UsageRecord

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not any(Path(p, "pg_dump").exists() for p in os.environ.get("PATH", "").split(os.pathsep))
    and not os.environ.get("ADP_PG_BIN_DIR"),
    reason="pg_dump not on PATH",
)


async def _seed(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """CREATE TABLE ledger (
               id bigserial PRIMARY KEY,
               request_id text NOT NULL UNIQUE,
               provider text NOT NULL,
               cost_micro_usd bigint NOT NULL,
               amount numeric(18, 6) NOT NULL,
               meta jsonb NOT NULL DEFAULT '{}')"""
    )
    await conn.executemany(
        "INSERT INTO ledger (request_id, provider, cost_micro_usd, amount, meta) VALUES ($1, $2, $3, $4, $5)",
        [
            (f"req-{i}", "openai" if i % 2 else "groq", i * 1234, Decimal(i) / 7, json.dumps({"i": i}))
            for i in range(500)
        ],
    )


async def _rows(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, request_id, provider, cost_micro_usd, amount, meta FROM ledger ORDER BY id")
        # the sequence continues where it was (no id reused after a restore)
        next_id = await conn.fetchval("SELECT nextval('ledger_id_seq')")
        return [tuple(r) for r in rows] + [("next", next_id)]
    finally:
        await conn.close()


async def test_database_round_trip(pg_dsn, databases, tmp_path: Path) -> None:
    name = databases.name("cost")
    conn = await databases.connect("cost")
    try:
        await _seed(conn)
    finally:
        await conn.close()
    before = await _rows(databases.dsn("cost"))

    folder = await backup.run_backup(
        nats_url="", prefix="unused", database_url=pg_dsn, out_dir=tmp_path, databases=[name], streams=[]
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["databases"][name]["bytes"] > 0
    assert manifest["streams"] == {}

    # disaster: the database is gone
    await db.drop_database(pg_dsn, name)
    await backup.run_restore(
        folder=folder, nats_url="", prefix="unused", database_url=pg_dsn, databases=None, streams=[]
    )
    after = await _rows(databases.dsn("cost"))
    assert after[:-1] == before[:-1]
    assert len(after) == 501

    # restoring over an existing database needs --replace, and then gives the backup's content back
    conn = await asyncpg.connect(databases.dsn("cost"))
    try:
        await conn.execute("DELETE FROM ledger WHERE id % 3 = 0")
        await conn.execute("INSERT INTO ledger (request_id, provider, cost_micro_usd, amount) VALUES ('x', 'x', 1, 1)")
    finally:
        await conn.close()
    with pytest.raises(RuntimeError, match="--replace"):
        await backup.run_restore(
            folder=folder, nats_url="", prefix="unused", database_url=pg_dsn, databases=None, streams=[]
        )
    await backup.run_restore(
        folder=folder, nats_url="", prefix="unused", database_url=pg_dsn, databases=None, streams=[], replace=True
    )
    assert (await _rows(databases.dsn("cost")))[:-1] == before[:-1]

    # and under another name (restore next to the live database to inspect it)
    copy = databases.name("costcopy")
    await backup.run_restore(
        folder=folder,
        nats_url="",
        prefix="unused",
        database_url=pg_dsn,
        databases=[name],
        streams=[],
        database_map={name: copy},
    )
    assert (await _rows(databases.dsn("costcopy")))[:-1] == before[:-1]


async def _stored(bus: Bus, stream: str) -> list[tuple[str, bytes, dict[str, str]]]:
    info = await bus.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await bus.js.get_msg(stream, seq=seq)
        except NotFoundError:  # a gap (e.g. a KV value replaced with history 1)
            continue
        out.append((msg.subject, msg.data or b"", dict(msg.headers or {})))
    return out


async def test_jetstream_round_trip(bus: Bus, nats_url: str, prefix: str, tmp_path: Path) -> None:
    await bus.ensure_streams(["USAGE", "DIALOGUE_WORK", "OPS"])
    cat = bus.catalog
    for i in range(120):
        record = UsageRecord(request_id=f"r{i}", provider="groq", model="m", input_tokens=i, output_tokens=2 * i)
        await bus.publish_event(cat.usage_record, record, msg_id=f"r{i}")
    for i in range(5):
        await bus.publish_event(cat.dialogue_work(f"d{i}"), UsageRecord(request_id=f"w{i}", provider="p", model="m"))
    # a work-queue stream with a live durable consumer is backed up without taking its messages
    work = cat.stream_name("DIALOGUE_WORK")
    await bus.js.pull_subscribe(cat.subject("dialogue", "work", ">"), durable="dialogue-steps", stream=work)
    kv = await bus.kv("breakers")
    await kv.put("openai", b'{"provider": "openai", "state": "open"}')
    await kv.put("groq", b'{"provider": "groq", "state": "closed"}')
    await kv.delete("groq")

    usage = cat.stream_name("USAGE")
    streams = [usage, work, cat.stream_name("OPS"), f"KV_{cat.bucket('breakers')}"]
    before = {s: await _stored(bus, s) for s in streams if (await bus.js.stream_info(s)).state.messages}
    configs = {s: (await bus.js.stream_info(s)).config for s in streams}

    folder = await backup.run_backup(
        nats_url=nats_url, prefix=prefix, database_url="", out_dir=tmp_path, databases=[], streams=None
    )
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["streams"]) == set(streams)
    assert manifest["streams"][usage]["messages"] == 120
    assert manifest["streams"][work]["messages"] == 5
    assert (await bus.js.stream_info(work)).state.messages == 5  # nothing consumed

    for s in streams:
        await bus.js.delete_stream(s)
    done = await backup.run_restore(
        folder=folder, nats_url=nats_url, prefix=prefix, database_url="", databases=[], streams=None
    )
    assert done["streams"][usage] == 120
    for s, msgs in before.items():
        restored = await _stored(bus, s)
        assert [(m[0], m[1]) for m in restored] == [(m[0], m[1]) for m in msgs], s
        for (_, _, h_before), (_, _, h_after) in zip(msgs, restored, strict=True):
            assert h_after.get("Nats-Msg-Id") == h_before.get("Nats-Msg-Id")
            assert h_after.get("traceparent") == h_before.get("traceparent")
    for s, config in configs.items():
        info = await bus.js.stream_info(s)
        assert info.config.subjects == config.subjects
        assert info.config.retention == config.retention
        assert info.config.max_age == config.max_age

    # the KV bucket works again: the open breaker is back, the deleted key stays deleted
    bus._kv.clear()
    kv = await bus.kv("breakers")
    assert (await kv.get("openai")).value == b'{"provider": "openai", "state": "open"}'
    assert "groq" not in await kv.keys()

    # restoring into non-empty streams needs --replace (nothing is appended twice)
    with pytest.raises(RuntimeError, match="--replace"):
        await backup.run_restore(
            folder=folder, nats_url=nats_url, prefix=prefix, database_url="", databases=[], streams=[usage]
        )
    done = await backup.run_restore(
        folder=folder, nats_url=nats_url, prefix=prefix, database_url="", databases=[], streams=[usage], replace=True
    )
    assert (await bus.js.stream_info(usage)).state.messages == 120


async def _cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adp_cli.main",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_backup_and_restore(bus: Bus, nats_url: str, prefix: str, pg_dsn, databases, tmp_path) -> None:
    """`adp backup` / `adp restore` end to end, as an operator runs them (options from ADP_* variables)."""
    name = databases.name("alerts")
    conn = await databases.connect("alerts")
    try:
        await _seed(conn)
    finally:
        await conn.close()
    before = await _rows(databases.dsn("alerts"))
    await bus.ensure_streams(["ALERTS"])
    for i in range(3):
        await bus.publish_event(
            bus.catalog.alert_event("firing"), UsageRecord(request_id=f"a{i}", provider="p", model="m")
        )
    env = {"ADP_NATS_URL": nats_url, "ADP_SUBJECT_PREFIX": prefix, "ADP_DATABASE_URL": pg_dsn}

    rc, out, err = await _cli("backup", "--out", str(tmp_path), "--databases", name, "--json", env=env)
    assert rc == 0, err
    result = json.loads(out)
    folder = result["folder"]
    assert list(result["manifest"]["databases"]) == [name]
    assert result["manifest"]["streams"][bus.catalog.stream_name("ALERTS")]["messages"] == 3

    await db.drop_database(pg_dsn, name)
    await bus.js.delete_stream(bus.catalog.stream_name("ALERTS"))
    rc, out, err = await _cli("restore", folder, env=env)
    assert rc == 0, err
    assert (await _rows(databases.dsn("alerts")))[:-1] == before[:-1]
    assert (await bus.js.stream_info(bus.catalog.stream_name("ALERTS"))).state.messages == 3


async def test_pg_scripts_round_trip(pg_dsn, databases, tmp_path) -> None:
    """scripts/backup/pg-backup.sh and pg-restore.sh (bash + pg_dump/pg_restore/psql only)."""
    name = databases.name("dialogue")
    conn = await databases.connect("dialogue")
    try:
        await _seed(conn)
    finally:
        await conn.close()
    before = await _rows(databases.dsn("dialogue"))
    env = {**os.environ, "ADP_DATABASE_URL": pg_dsn}
    proc = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts/backup/pg-backup.sh"), str(tmp_path), name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    dump = Path(out.decode().strip()) / f"db-{name}.dump"
    assert dump.stat().st_size > 0

    await db.drop_database(pg_dsn, name)
    proc = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts/backup/pg-restore.sh"), str(dump), name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert (await _rows(databases.dsn("dialogue")))[:-1] == before[:-1]
