"""`adp cost show` (short name `adp costs`) and `adp alerts-list`: the gateway's cost and alert views as tables
(GET /api/costs, GET /api/alerts).
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from adp_cli.tables import alert_table, table
from adp_cli.terminal.render import first
from adp_client import ApiError, Client


def usd(value: Any) -> str:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return f"${d:.4f}" if d and abs(d) < 1 else f"${d:.2f}"


def cmd_costs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("startDate", args.start), ("endDate", args.end), ("userId", args.user)) if v}
    try:
        with Client(args.url, args.key, timeout=args.timeout) as client:
            c = client.costs(**params).model_dump(mode="json")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.code == "NETWORK_ERROR" else 1
    if args.json:
        print(json.dumps(c, indent=2))
        return 0
    b = c.get("budget") or {}
    if b:
        cur, lim = Decimal(str(b.get("current", 0))), Decimal(str(b.get("limit", 0)))
        pct = float(cur / lim * 100) if lim else float(b.get("percentage") or 0)
        flag = "  EXCEEDED" if b.get("exceeded") else ""
        print(f"Budget today: {usd(cur)} of {usd(lim) if lim else 'no limit'} ({pct:.1f}%){flag}")
    if c.get("userCost") is not None:
        print(f"Your cost: {usd(c['userCost'])}")
    print()
    by_prov = c.get("costByProvider") or []
    rows = [
        [
            str(first(r.get("key"), r.get("provider"), "?")),
            usd(first(r.get("cost_usd"), r.get("cost"), 0)),
            str(r.get("requests", "")),
            str(r.get("input_tokens", "")),
            str(r.get("output_tokens", "")),
        ]
        for r in by_prov
    ]
    print("Cost by provider")
    print(
        table(["PROVIDER", "COST", "REQUESTS", "IN TOKENS", "OUT TOKENS"], rows, max_width=60, rule=True)
        if rows
        else "(none)"
    )
    print()
    daily = sorted(c.get("dailyCosts") or [], key=lambda r: (str(r.get("date")), str(r.get("provider"))))
    drows = [[str(r.get("date")), str(r.get("provider")), usd(r.get("cost_usd", 0))] for r in daily]
    print("Daily cost")
    print(table(["DATE", "PROVIDER", "COST"], drows, max_width=60, rule=True) if drows else "(none)")
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    """`adp alerts`' listing through the gateway (an API key instead of NATS access); the same table."""
    try:
        with Client(args.url, args.key, timeout=args.timeout) as client:
            alerts = client.alerts().alerts
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.code == "NETWORK_ERROR" else 1
    if not args.all:
        alerts = [a for a in alerts if a.state != "resolved"]
    if args.json:
        print(json.dumps([a.model_dump(mode="json") for a in alerts], indent=2))
    elif alerts:
        print(alert_table(alerts))
    else:
        print("no active alerts" if not args.all else "no alerts")
    return 0
