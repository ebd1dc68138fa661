"""`adp up`: run the whole platform locally as separate processes.

Uses NATS / PostgreSQL / Redis from ADP_NATS_URL / ADP_DATABASE_URL / ADP_REDIS_URL, else servers already
listening on the default local ports, else starts embedded NATS and PostgreSQL from PyPI packages with
data under `--data-dir` (no Docker, no system packages). Redis is optional (the gateway falls back to
in-process rate limiting).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

from adp_cli import servers
from adp_cli.nats_cluster import start_nats_cluster
from adp_cli.procs import SERVICES, START_ORDER, Proc, ProcessManager
from adp_cli.supervisor import Supervisor


def _parse_scale(values: list[str]) -> dict[str, int]:
    scale: dict[str, int] = {}
    for item in values:
        name, _, count = item.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"--scale takes SERVICE=N with SERVICE in {', '.join(SERVICES)}")
        scale[name] = int(count)
    return scale


def _cluster_size(value: str) -> int:
    if not value.isdigit() or int(value) < 3:
        raise argparse.ArgumentTypeError("a JetStream cluster needs at least 3 servers (a majority survives one lost)")
    return int(value)


BOOTSTRAP_KEY_FILE = "bootstrap-api-key"


def bootstrap_key(data_dir: Path) -> str:
    """ADP_BOOTSTRAP_API_KEY, else a key generated once and kept in the data dir."""
    key = os.environ.get("ADP_BOOTSTRAP_API_KEY")
    if key:
        return key
    path = data_dir / BOOTSTRAP_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = "adp_" + secrets.token_urlsafe(24)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def mask_key(key: str) -> str:
    """Enough of a key to tell keys apart in a log, not enough to use it."""
    return f"{key[:8]}…{key[-4:]}" if len(key) > 16 else "…"


def key_banner(key: str, data_dir: Path, *, from_env: bool, show: bool) -> tuple[str, str]:
    """(the banner's API-key line, the Authorization value of its curl example): the key itself only when
    asked for (banners end up in captured logs), else where it is and a masked form."""
    if show:
        return key, key
    if from_env:
        return f"{mask_key(key)}  (from ADP_BOOTSTRAP_API_KEY)", "$ADP_BOOTSTRAP_API_KEY"
    path = data_dir / BOOTSTRAP_KEY_FILE
    return f"{mask_key(key)}  (in {path}; --show-key prints it)", f"$(cat {path})"


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    started: list[servers.Started] = []
    try:
        nats = _resolve_nats(args, data_dir)
        started.append(nats)
        print(f"NATS       {nats.url} ({nats.kind})")
        pg = servers.resolve_postgres("ADP_DATABASE_URL", use_docker=False, data_dir=data_dir / "postgres")
        started.append(pg)
        print(f"PostgreSQL {pg.url.split('@')[-1]} ({pg.kind})")
        redis = servers.resolve_redis("ADP_REDIS_URL", use_docker=False)
        if redis is not None:
            started.append(redis)
            print(f"Redis      {redis.url} ({redis.kind})")
        else:
            print("Redis      none (rate limits enforced per gateway process)")
        key = bootstrap_key(data_dir)
        env = dict(os.environ)
        env.update({"ADP_NATS_URL": nats.url, "ADP_DATABASE_URL": pg.url, "ADP_BOOTSTRAP_API_KEY": key})
        if args.nats_cluster:
            env.setdefault("ADP_STREAM_REPLICAS", str(args.nats_cluster))
        if redis is not None:
            env["ADP_REDIS_URL"] = redis.url
        # error.log and combined.log (rotated) go to --log-dir, else ADP_LOG_DIR, else DATA_DIR/logs
        log_dir = Path(args.log_dir or env.get("ADP_LOG_DIR") or data_dir / "logs").resolve()
        env["ADP_LOG_DIR"] = str(log_dir)
        print(f"Logs       {log_dir / 'error.log'}, {log_dir / 'combined.log'}")
        manager = ProcessManager(env=env, relay=None if args.quiet else sys.stdout, log_dir=data_dir / "logs")
        banner = key_banner(key, data_dir, from_env=bool(os.environ.get("ADP_BOOTSTRAP_API_KEY")), show=args.show_key)
        return asyncio.run(_run(manager, args, banner))
    finally:
        for s in reversed(started):
            s.stop()


def _resolve_nats(args: argparse.Namespace, data_dir: Path) -> servers.Started:
    """With --nats-cluster N an embedded N-server JetStream cluster (stores under DATA_DIR/nats-cluster);
    otherwise ADP_NATS_URL, a local server or an embedded one."""
    if not args.nats_cluster:
        return servers.resolve_nats("ADP_NATS_URL", use_docker=False, data_dir=data_dir / "nats")
    if os.environ.get("ADP_NATS_URL"):
        raise SystemExit("--nats-cluster starts its own NATS servers: unset ADP_NATS_URL to use it")
    try:
        cluster = start_nats_cluster(
            args.nats_cluster,
            data_dir / "nats-cluster",
            base_port=args.nats_port or None,
            log_dir=data_dir / "logs" / "nats",
        )
    except RuntimeError as err:
        raise SystemExit(f"start-up failed: {err}") from None
    return cluster.as_started()


def print_banner(procs: list[Proc], key_lines: tuple[str, str], manager: ProcessManager) -> None:
    gateways = [p for p in procs if p.service == "gateway"]
    print()
    print(f"AI Dialogue Platform is up ({len(procs)} processes: " + ", ".join(p.name for p in procs) + ")")
    shared = f" (shared by {len(gateways)} gateway copies)" if len(gateways) > 1 else ""
    print(f"  Gateway:  {gateways[0].url}{shared}   (web console at /, API docs at /docs)")
    key_line, key_value = key_lines
    print(f"  API key:  {key_line}")
    log_dir = Path(manager.env["ADP_LOG_DIR"])
    print(f"  Logs:     {log_dir / 'error.log'} (errors), {log_dir / 'combined.log'} (everything)")
    print(f'  Try:      curl -H "Authorization: Bearer {key_value}" {gateways[0].url}/api/health')
    print("  Stop:     Ctrl-C")
    sys.stdout.flush()


async def _run(manager: ProcessManager, args: argparse.Namespace, key_lines: tuple[str, str]) -> int:
    scale = _parse_scale(args.scale or [])
    procs = []
    for service in START_ORDER:
        for _ in range(scale.get(service, args.replicas)):
            if service == "gateway":  # every copy listens on the one public port (SO_REUSEPORT)
                procs.append(manager.start(service, port=args.port, extra_env={"ADP_HTTP_REUSE_PORT": "true"}))
            else:
                procs.append(manager.start(service))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiting = asyncio.create_task(manager.wait_healthy(procs, timeout=args.timeout))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({waiting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        waiting.cancel()
        await asyncio.to_thread(manager.stop_all, 20)
        return 130
    stopper.cancel()
    try:
        waiting.result()
    except Exception as err:
        print(f"\nstart-up failed: {err}", file=sys.stderr)
        await asyncio.to_thread(manager.stop_all, 10)
        return 1
    if args.exit_when_healthy:
        print_banner(procs, key_lines, manager)
        await asyncio.to_thread(manager.stop_all, 15)
        return 0
    supervisor = Supervisor(manager, procs, Path(args.data_dir))
    supervisor.write_state()  # before the banner: whoever reads it finds the processes recorded (`adp status`)
    print_banner(procs, key_lines, manager)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
            supervisor.check()
        print("stopping (draining in-flight work)...")
        await asyncio.to_thread(manager.stop_all, 20)
    finally:
        supervisor.remove_state()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run all services locally (embedded NATS/PostgreSQL when none are running)")
    p.add_argument("--replicas", type=int, default=1, help="copies of every service (default 1)")
    p.add_argument("--scale", action="append", metavar="SERVICE=N", help="copies of one service, e.g. llm-router=3")
    p.add_argument(
        "--nats-cluster", type=_cluster_size, default=0, metavar="N",
        help="run an embedded N-server JetStream cluster (N >= 3); streams and buckets get N replicas",
    )  # fmt: skip
    p.add_argument(
        "--nats-port", type=int, default=4222,
        help="first client port of --nats-cluster (route ports +2000, monitoring +4000; 0: free ports)",
    )  # fmt: skip
    p.add_argument("--port", type=int, default=int(os.environ.get("ADP_GATEWAY_PORT", "8080")), help="gateway port")
    p.add_argument("--data-dir", default=os.environ.get("ADP_DATA_DIR", ".adp"), help="embedded servers' data")
    p.add_argument(
        "--log-dir", default=None, help="where error.log/combined.log go [ADP_LOG_DIR, default DATA_DIR/logs]"
    )
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for every service to be healthy")
    p.add_argument("--quiet", action="store_true", help="don't stream service logs (they go to DATA_DIR/logs)")
    p.add_argument("--exit-when-healthy", action="store_true", help="start, check health, stop (smoke test)")
    p.add_argument("--show-key", action="store_true", help="print the admin API key itself in the banner")
    p.set_defaults(func=cmd_up)
