"""The whole platform as OS processes for the console tests (one start per test module)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from adp_common.bus import Bus
from adp_testing.fixtures import cleanup_prefix
from adp_testing.procs import ServiceProcesses

ADMIN_KEY = "console-admin-" + uuid.uuid4().hex[:12]


def platform_env(redis_url: str) -> dict[str, str]:
    return {
        "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
        "ADP_REDIS_URL": redis_url,
        "ADP_RATE_LIMIT_ENABLED": "false",
        "ADP_MAX_ACTIVE_DISCUSSIONS": "100",
        "ADP_SIMULATED_TTFT_MS": "20",
        "ADP_SIMULATED_TOKENS_PER_S": "400",
        "ADP_TURN_MAX_TOKENS": "120",
        # the simulated provider is free by default; price it so the cost chart has bars
        "ADP_COST_PRICE_SIMULATED": "20,40",
        "ADP_ALERTS_EVAL_INTERVAL_S": "0.2",
        "ADP_LOG_LEVEL": "WARNING",
    }


@dataclass
class Platform:
    url: str
    key: str
    prefix: str
    procs: ServiceProcesses
    bus: Bus


async def start_platform(nats_url: str, pg_dsn: str, redis_url: str) -> Platform:
    prefix = "tc" + uuid.uuid4().hex[:10]
    procs = ServiceProcesses(nats_url=nats_url, pg_dsn=pg_dsn, prefix=prefix)
    try:
        started = await procs.start_healthy(extra_env=platform_env(redis_url), timeout=90)
    except BaseException:
        await stop_platform_parts(procs, nats_url, None)
        raise
    gateway = next(p for p in started if p.service == "gateway")
    bus = await Bus.connect(nats_url, prefix=prefix, name="console-test", instance="console-test")
    return Platform(url=gateway.url, key=ADMIN_KEY, prefix=prefix, procs=procs, bus=bus)


async def stop_platform_parts(procs: ServiceProcesses, nats_url: str, bus: Bus | None) -> None:
    try:
        if bus is not None:
            await bus.close(grace=1)
        await procs.stop_all()
        await procs.drop_databases()
    finally:
        await cleanup_prefix(nats_url, procs.prefix)


async def stop_platform(p: Platform, nats_url: str) -> None:
    await stop_platform_parts(p.procs, nats_url, p.bus)
