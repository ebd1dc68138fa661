"""adp CLI commands for users (terminal client): `adp discuss`, `adp cost show` (short name `adp costs`),
`adp alerts-list`.

Built only on the gateway's client contract (docs/gateway.md): Bearer API key, JSON endpoints and the
discussion event stream (Server-Sent Events, resumed with Last-Event-ID after a drop). `transport` reads
the stream, `render` shows it, `prompt` runs the discussion's prompt loop, `reports` prints the tables.
"""

from __future__ import annotations

import argparse
import os

from adp_cli.terminal.prompt import cmd_discuss
from adp_cli.terminal.reports import cmd_alerts_list, cmd_costs

DEFAULT_URL = "http://127.0.0.1:8080"


# ---- registration ------------------------------------------------------------------------------------------


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("ADP_URL", DEFAULT_URL), help="gateway URL (env ADP_URL)")
    p.add_argument("--key", default=os.environ.get("ADP_API_KEY"), help="API key (env ADP_API_KEY)")
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")


def add_costs_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="cost by provider, per day, and today's budget (GET /api/costs)")
    add_connection_args(p)
    p.add_argument("--start", help="start date YYYY-MM-DD")
    p.add_argument("--end", help="end date YYYY-MM-DD")
    p.add_argument("--user", help="user id (admins)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_costs)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the `adp` parser."""
    p = sub.add_parser("discuss", help="start a discussion and watch it live in the terminal")
    p.add_argument("topic", help="what the AIs should discuss")
    add_connection_args(p)
    p.add_argument("--rounds", type=int, default=None, help="maximum number of rounds")
    p.add_argument("--auto", action="store_true", help="proceed automatically after every round (no prompt)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="persona colours")
    p.add_argument("--no-color", action="store_true", help="same as --color never")
    p.add_argument("--no-spinner", action="store_true", help="no progress indicator")
    p.add_argument("--round-timeout", type=float, default=300.0, help="give up when a round takes longer")
    p.add_argument("--settle", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_discuss)

    add_costs_parser(sub, "costs")  # the short name of `adp cost show`

    p = sub.add_parser("alerts-list", help="alerts as the gateway shows them (GET /api/alerts)")
    add_connection_args(p)
    p.add_argument("--all", action="store_true", help="include resolved alerts")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_alerts_list)
