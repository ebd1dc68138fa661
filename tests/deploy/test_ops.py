"""Operator commands (`adp status|breakers|budget|alerts`) against the real llm-router, cost and alerts
services (in-process, on the real NATS and PostgreSQL), as the runbook uses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adp_cli import ops
from adp_cli.main import build_parser
from adp_common.bus import Bus
from adp_common.errors import PlatformError
from adp_common.schemas.llm import BreakerState, UsageRecord
from adp_testing.inproc import running_service

REPO = Path(__file__).resolve().parents[2]


async def adp(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run an `adp` operator command in this event loop; returns (exit code, parsed --json output)."""
    args = build_parser().parse_args([*argv, "--json"])
    handler = {
        "status": ops._status,
        "breakers": ops._breakers,
        "budget": ops._budget,
        "alerts": ops._alerts,
    }[args.command]
    capsys.readouterr()
    rc = await handler(args)
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else None


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def platform(nats_url: str, pg_dsn: str, prefix: str, databases: Any) -> AsyncIterator[None]:
    """llm-router (simulated provider), cost and alerts, isolated by the test's prefix and databases."""
    from adp_alerts.app import AlertsApp
    from adp_alerts.main import MIGRATIONS as ALERTS_MIGRATIONS
    from adp_alerts.settings import AlertsSettings
    from adp_cost.app import CostApp
    from adp_cost.main import MIGRATIONS as COST_MIGRATIONS
    from adp_cost.settings import CostSettings
    from adp_router.app import RouterApp
    from adp_router.settings import RouterSettings

    common: dict[str, Any] = {
        "nats_url": nats_url,
        "subject_prefix": prefix,
        "database_url": pg_dsn,
        "heartbeat_interval_s": 0.5,
        "shutdown_grace_s": 3,
        "db_pool_max": 3,
    }
    router = RouterSettings(**common, router_simulated="always", simulated_ttft_ms=0)
    cost = CostSettings(
        **common, database_name=databases.name("cost"), cost_budget_refresh_s=0.3, cost_budget_debounce_s=0.01
    )
    alerts = AlertsSettings(**common, database_name=databases.name("alerts"), alerts_eval_interval_s=0.1)
    async with (
        running_service("llm-router", router, RouterApp(router), use_database=False, admin_server=False),
        running_service("cost", cost, CostApp(cost), migrations_dir=COST_MIGRATIONS, admin_server=False),
        running_service("alerts", alerts, AlertsApp(alerts), migrations_dir=ALERTS_MIGRATIONS, admin_server=False),
    ):
        yield


@pytest.mark.slow
async def test_operator_commands_against_running_services(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--nats-url", nats_url, "--prefix", prefix, "--timeout", "5"]
    async with platform(nats_url, pg_dsn, prefix, databases):
        # status: the three running services are UP (one copy each); gateway and dialogue are not running
        rc, status = await adp(capsys, "status", *base)
        states = {s["service"]: s for s in status["services"]}
        assert rc == 1 and status["ok"] is False
        for name in ("llm-router", "cost", "alerts"):
            assert states[name]["status"] == "UP", states[name]
            assert len(states[name]["instances"]) == 1
            assert states[name]["components"]["nats"] == "UP"
        assert states["cost"]["components"]["database"] == "UP"
        assert states["gateway"]["status"] == "UNREACHABLE" and states["dialogue"]["status"] == "UNREACHABLE"

        # breakers: the router answers with every provider's breaker (only the simulated one here)
        rc, breakers = await adp(capsys, "breakers", *base)
        assert rc == 0 and breakers["source"] == "llm-router"
        assert {p["breaker"] for p in breakers["providers"]} == {"closed"}
        assert any(p["provider"] == "simulated" for p in breakers["providers"])

        # budget: set a tiny limit, spend over it, see it exceeded (exit 1) and the alert fire
        rc, state = await adp(capsys, "budget", *base, "--set", "0.000001")
        assert rc == 0 and Decimal(state["limit_usd"]) == Decimal("0.000001")
        rc, budget = await adp(capsys, "budget", *base)
        assert rc == 0 and budget["budget"]["exceeded"] is False
        assert budget["budget"]["current"] == "0.000000000"  # fixed decimals, never 0E-9
        capsys.readouterr()
        await ops._budget(build_parser().parse_args(["budget", *base]))
        text = capsys.readouterr().out
        assert "global: $0.000000000 of $0.000001000 today" in text and "E-" not in text, text
        record = UsageRecord(
            request_id="ops-1", provider="openai", model="gpt-4o-mini", input_tokens=50_000, output_tokens=50_000
        )
        await bus.publish_event(bus.catalog.usage_record, record, msg_id=record.request_id)

        async def exceeded() -> bool:
            _, b = await adp(capsys, "budget", *base)
            return bool(b["budget"] and b["budget"]["exceeded"])

        await until(exceeded, what="budget exceeded")
        rc, budget = await adp(capsys, "budget", *base)
        assert rc == 1 and float(budget["budget"]["percentage"]) >= 100

        async def firing() -> bool:
            _, a = await adp(capsys, "alerts", *base)
            return any(x["rule"] == "budget_exceeded" for x in a["alerts"])

        await until(firing, what="budget_exceeded alert")
        rc, alerts = await adp(capsys, "alerts", *base)
        assert rc == 1
        alert = next(a for a in alerts["alerts"] if a["rule"] == "budget_exceeded")
        assert alert["severity"] == "critical" and alert["state"] == "firing"

        # acknowledge it: still listed as firing, no longer a problem for the exit code
        rc, _ = await adp(capsys, "alerts", *base, "--ack", alert["id"], "--by", "ops-test")
        assert rc == 0
        rc, alerts = await adp(capsys, "alerts", *base)
        acked = next(a for a in alerts["alerts"] if a["id"] == alert["id"])
        assert acked["acknowledged"] and acked["acknowledged_by"] == "ops-test"
        rc, history = await adp(capsys, "alerts", *base, "--history")
        assert any(a["id"] == alert["id"] for a in history["alerts"])

        # an unknown alert id is an error
        args = build_parser().parse_args(["alerts", *base, "--ack", "no-such-alert"])
        with pytest.raises(PlatformError, match="not found"):
            await ops._alerts(args)

        # the same status from a separate process, as an operator runs it (exit code 1: two services missing)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adp_cli.main", "status", *base,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
            env={**os.environ},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1, err.decode()
        text = out.decode()
        assert "llm-router" in text and "UNREACHABLE" in text
        assert [line.split()[1] for line in text.splitlines()[1:6]] == ["UP", "UP", "UP", "UNREACHABLE", "UNREACHABLE"]


async def test_breakers_fall_back_to_the_kv_bucket(
    bus: Bus, nats_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the llm-router down, `adp breakers` reads the shared breaker state and exits 1 on an open one."""
    kv = await bus.kv("breakers")
    await kv.put("groq", BreakerState(provider="groq", state="open", failures=[1.0, 2.0]).model_dump_json().encode())
    await kv.put("openai", BreakerState(provider="openai").model_dump_json().encode())
    rc, out = await adp(capsys, "breakers", "--nats-url", nats_url, "--prefix", prefix, "--timeout", "0.5")
    assert rc == 1 and out["source"] == "kv"
    assert {p["provider"]: p["breaker"] for p in out["providers"]} == {"groq": "open", "openai": "closed"}


def test_usd_amounts_are_validated() -> None:
    parser = build_parser()
    assert str(parser.parse_args(["budget", "--set", "12.50"]).set) == "12.50"
    for bad in ("-1", "abc", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["budget", "--set", bad])


async def test_status_checks_the_gateway_http_health() -> None:
    """`adp status --gateway-url` reads GET /api/health: 200 is UP, 503 is DOWN, no answer is UNREACHABLE."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from adp_common.health import AdminServer

    state = {"code": 200}

    async def health(_: object) -> JSONResponse:
        status = "UP" if state["code"] == 200 else "DOWN"
        return JSONResponse({"status": status, "components": {"nats": {"status": status}}}, status_code=state["code"])

    server = AdminServer(Starlette(routes=[Route("/api/health", health)]), "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        status, body = await ops.gateway_http_health(url, 2.0)
        assert status == "UP" and body["status"] == "UP"
        state["code"] = 503
        status, body = await ops.gateway_http_health(url + "/", 2.0)
        assert status == "DOWN (503)" and body["components"]["nats"]["status"] == "DOWN"
    finally:
        await server.stop()
    status, _ = await ops.gateway_http_health(url, 1.0)
    assert status.startswith("UNREACHABLE")
