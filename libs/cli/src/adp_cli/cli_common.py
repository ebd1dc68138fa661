"""What the operator commands of `adp` share: connection options, the bus connection, running a command
and reporting its errors, JSON output, and reading a KV bucket.

Connection options default to the services' own environment variables (ADP_NATS_URL, ADP_SUBJECT_PREFIX,
ADP_DATABASE_URL), so inside a container or next to a `.env` they need no arguments. Exit code 0 means
healthy/done, 1 a problem found, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from adp_common.bus import Bus
from adp_common.errors import PlatformError


# ---------------------------------------------------------------------------------------------------- helpers
def env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


def connection_options(p: argparse.ArgumentParser, *, database: bool = False) -> None:
    p.add_argument("--nats-url", default=env_default("ADP_NATS_URL", "nats://127.0.0.1:4222"), help="[ADP_NATS_URL]")
    p.add_argument(
        "--prefix", default=env_default("ADP_SUBJECT_PREFIX", "adp"), help="subject prefix [ADP_SUBJECT_PREFIX]"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if database:
        p.add_argument(
            "--database-url",
            default=env_default("ADP_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
            help="PostgreSQL server DSN [ADP_DATABASE_URL]",
        )


async def connect_bus(args: argparse.Namespace) -> Bus:
    return await Bus.connect(args.nats_url, prefix=args.prefix, name="adp-ops", connect_timeout=args.timeout)


def run_command(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except PlatformError as err:
        print(f"error: {err.code.value}: {err.message}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, RuntimeError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


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


def command(fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return run_command(fn(args))

    return run
