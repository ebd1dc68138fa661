"""`adp cost`: every spend and budget command in one family.

- `adp cost show`: what a user sees through the gateway (GET /api/costs, with an API key);
- `adp cost report`: the operator's spend report by provider and by user, over the bus;
- `adp cost budget`: today's spend against the daily budget over the bus; `--set` changes the limit.

`adp costs`, `adp budget` and the `adp-cost-report` command are the same commands under their short names.
"""

from __future__ import annotations

import argparse

from adp_cli import cost_report, ops, terminal
from adp_cli.cli_common import connection_options


def register(sub: argparse._SubParsersAction) -> None:
    """Add `adp cost` and its sub-commands to the `adp` parser."""
    p = sub.add_parser("cost", help="spend and budget: show (gateway), report and budget (operators)")
    family = p.add_subparsers(dest="cost_command", required=True, metavar="SUBCOMMAND")
    terminal.add_costs_parser(family, "show")
    report = family.add_parser("report", help="spend today, by provider and by user for a date range (over NATS)")
    connection_options(report)
    cost_report.add_report_args(report)
    ops.add_budget_parser(family, "budget")
