"""`adp`: the platform's command line — launcher, operator commands and terminal client."""

from __future__ import annotations

import argparse
import sys

from adp_cli import access, backup, cost, faults, launcher, ops, terminal


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adp", description="AI Dialogue Platform command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    launcher.register(sub)  # up
    ops.register(sub)  # status, breakers, budget, alerts (operators)
    backup.register(sub)  # backup, restore (operators)
    faults.register(sub)  # faults (fault rehearsal)
    access.register(sub)  # disable-user, revoke-user-keys, rotate-bootstrap-key (security incidents)
    terminal.register(sub)  # discuss, costs (users)
    cost.register(sub)  # cost show|report|budget
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    sys.exit(args.func(args) or 0)


if __name__ == "__main__":
    main()
