"""Operator commands of the `adp` CLI: status, breakers, budget, alerts.

Every command talks to the running platform over NATS (the same subjects the services serve); see
`adp_cli.cli_common` for the connection options and exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from adp_cli.cli_common import command, connect_bus, connection_options, print_json, read_kv
from adp_cli.procs import START_ORDER
from adp_cli.supervisor import read_state
from adp_cli.tables import alert_table, table
from adp_common.bus import Bus
from adp_common.catalog import KV_BREAKERS, KV_BUDGET
from adp_common.errors import PlatformError
from adp_common.schemas.alerts import AckAlert, AlertList, AlertQuery
from adp_common.schemas.common import HealthReply
from adp_common.schemas.cost import BudgetState, CostQuery, CostSummary, SetBudget
from adp_common.schemas.llm import BreakerState, ProviderStatusList
from adp_common.schemas.money import format_money


# ---------------------------------------------------------------------------------------------------- helpers
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
    bus = await connect_bus(args)
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
        print_json(
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
    print(table(["SERVICE", "STATUS", "COPIES", "COMPONENTS"], rows))
    if args.gateway_url:
        print(f"\ngateway HTTP {args.gateway_url}/api/health: {http_state}")
    if processes is not None:
        print(f"\nprocesses of `adp up` ({args.data_dir}):")
        cells = [[p["name"], p["pid"], p["port"], p["state"], p["restarts"], p["last_exit"] or ""] for p in processes]
        print(table(["PROCESS", "PID", "PORT", "STATE", "RESTARTS", "LAST EXIT"], cells))
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------------- breakers
async def _breakers(args: argparse.Namespace) -> int:
    bus = await connect_bus(args)
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
        print_json({"source": source, "providers": providers})
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
        print(table(["PROVIDER", "BREAKER", "AVAILABLE", "SUCCESS", "REQUESTS", "P95_MS", "SIMULATED"], rows))
    else:
        rows = [[p["provider"], p["breaker"], str(p["recent_failures"])] for p in providers]
        print(table(["PROVIDER", "BREAKER", "RECENT_FAILURES"], rows))
    open_ = [p["provider"] for p in providers if p.get("breaker") == "open"]
    return 1 if open_ else 0


# ---------------------------------------------------------------------------------------------------- budget
async def _set_budget(bus: Bus, args: argparse.Namespace) -> int:
    state = await bus.request(
        bus.catalog.cost_budget_set,
        SetBudget(daily_limit_usd=args.set, user_id=args.user, threshold=args.threshold),
        timeout=args.timeout,
        response_model=BudgetState,
    )
    if args.json:
        print_json(state.model_dump(mode="json"))
    else:
        print(
            f"budget {state.scope}: limit ${format_money(state.limit_usd)}"
            f" (spent ${format_money(state.spent_usd)} on {state.day})"
        )
    return 0


async def _read_budget(bus: Bus, args: argparse.Namespace) -> tuple[CostSummary | None, dict[str, BudgetState]]:
    """The cost service's answer (None when it does not answer) and every budget state in the KV bucket."""
    summary: CostSummary | None = None
    try:
        summary = await bus.request(
            bus.catalog.cost_query,
            CostQuery(kind="budget", user_id=args.user),
            timeout=args.timeout,
            response_model=CostSummary,
        )
    except PlatformError as err:
        print(f"cost service did not answer ({err.message}); reading the budget KV bucket", file=sys.stderr)
    states = {}
    for key, raw in (await read_kv(bus, KV_BUDGET)).items():
        with contextlib.suppress(ValueError):
            states[key] = BudgetState.model_validate_json(raw)
    return summary, states


def _print_budget(args: argparse.Namespace, summary: CostSummary | None, states: dict[str, BudgetState]) -> None:
    budget = summary.budget if summary else None
    if args.json:
        print_json(
            {
                "budget": budget.model_dump(mode="json") if budget else None,
                "user_cost": format_money(summary.userCost) if summary and summary.userCost is not None else None,
                "states": {k: v.model_dump(mode="json") for k, v in states.items()},
            }
        )
        return
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
        print(table(["SCOPE", "DAY", "SPENT_USD", "LIMIT_USD", "USED", "EXCEEDED"], rows))


async def _budget(args: argparse.Namespace) -> int:
    bus = await connect_bus(args)
    try:
        if args.set is not None:
            return await _set_budget(bus, args)
        summary, states = await _read_budget(bus, args)
    finally:
        await bus.close(grace=1)
    _print_budget(args, summary, states)
    budget = summary.budget if summary else None
    exceeded = (budget is not None and budget.exceeded) or any(s.exceeded for s in states.values())
    return 1 if exceeded else 0


# ---------------------------------------------------------------------------------------------------- alerts
async def _alerts(args: argparse.Namespace) -> int:
    bus = await connect_bus(args)
    try:
        if args.ack:
            reply = await bus.request(
                bus.catalog.alerts_ack, AckAlert(alert_id=args.ack, by=args.by), timeout=args.timeout
            )
            if args.json:
                print_json(reply)
            else:
                print(f"acknowledged {args.ack}")
            return 0
        query = AlertQuery(kind="history" if args.history else "active", severity=args.severity, limit=args.limit)
        result = await bus.request(bus.catalog.alerts_query, query, timeout=args.timeout, response_model=AlertList)
    finally:
        await bus.close(grace=1)
    if args.json:
        print_json(result.model_dump(mode="json"))
    elif result.alerts:
        print(alert_table(result.alerts))
    else:
        print("no alerts" if args.history else "no active alerts")
    firing = [a for a in result.alerts if a.state == "firing" and not a.acknowledged]
    return 1 if firing and not args.history else 0


def _usd(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}")
    return amount


# ---------------------------------------------------------------------------------------------------- parser
budget_command = command(_budget)


def add_budget_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="today's spend against the daily budget; --set changes the limit")
    connection_options(p)
    p.add_argument("--set", metavar="USD", type=_usd, help="new daily limit in USD (decimal)")
    p.add_argument("--user", metavar="ID", help="a user's budget instead of the global one")
    p.add_argument("--threshold", type=float, help="warning threshold as a fraction (with --set), e.g. 0.8")
    p.set_defaults(func=budget_command)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the `adp` parser."""
    p = sub.add_parser("status", help="health of every service (over NATS) and of the gateway's HTTP API")
    connection_options(p)
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
    p.set_defaults(func=command(_status))

    p = sub.add_parser("breakers", help="circuit-breaker state and health of each LLM provider")
    connection_options(p)
    p.set_defaults(func=command(_breakers))

    add_budget_parser(sub, "budget")  # the short name of `adp cost budget`

    p = sub.add_parser("alerts", help="active alerts (or --history); --ack ID acknowledges one")
    connection_options(p)
    p.add_argument("--ack", metavar="ID", help="acknowledge this alert")
    p.add_argument("--by", default=os.environ.get("USER", "operator"), help="who acknowledges (with --ack)")
    p.add_argument("--history", action="store_true", help="all recent alerts, resolved ones included")
    p.add_argument("--severity", choices=["info", "warning", "critical"])
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=command(_alerts))
