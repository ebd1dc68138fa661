"""`adp cost show|report|budget` and their short names parse to the same commands with the same options."""

from __future__ import annotations

import pytest

from adp_cli import cost_report, ops
from adp_cli.main import build_parser
from adp_cli.terminal.reports import cmd_costs


def test_cost_family_and_short_names_run_the_same_commands() -> None:
    parser = build_parser()
    pairs = [
        (["cost", "show", "--start", "2025-01-01", "--json"], ["costs", "--start", "2025-01-01", "--json"]),
        (["cost", "budget", "--set", "2.5", "--user", "u"], ["budget", "--set", "2.5", "--user", "u"]),
    ]
    for family, short in pairs:
        a, b = parser.parse_args(family), parser.parse_args(short)
        assert a.func is b.func
        assert {k: v for k, v in vars(a).items() if k not in ("func", "command", "cost_command")} == {
            k: v for k, v in vars(b).items() if k not in ("func", "command")
        }
    assert parser.parse_args(["cost", "show"]).func is cmd_costs
    assert parser.parse_args(["cost", "budget"]).func is ops.budget_command
    report = parser.parse_args(["cost", "report", "--top", "5", "--user", "u", "--end", "2025-02-01", "--json"])
    assert report.func is cost_report.report
    assert report.top == 5 and report.user == "u" and report.end.isoformat() == "2025-02-01" and report.json
    standalone = cost_report.build_parser().parse_args(["--top", "5"])
    assert standalone.func is cost_report.report and standalone.top == 5


def test_cost_family_needs_a_sub_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cost"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cost", "report", "--end", "tomorrow"])
