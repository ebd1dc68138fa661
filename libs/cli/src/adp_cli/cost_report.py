"""`adp cost report` (also installed as `adp-cost-report`): spend today, by provider and by user for a date
range, asked of the cost service over the bus (so it works against any running deployment, with no database
access)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import date
from decimal import Decimal

from nats.errors import Error as NatsError

from adp_common.bus import Bus
from adp_common.errors import PlatformError
from adp_common.schemas.cost import CostQuery, CostRow, CostSummary


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The report's own options (the connection options come from the caller)."""
    p.add_argument("--start", type=_parse_date, help="first day (UTC), default: 29 days before --end")
    p.add_argument("--end", type=_parse_date, help="last day (UTC), default: today")
    p.add_argument("--user", help="only this user's spend")
    p.add_argument("--top", type=int, default=20, help="rows per breakdown (default 20)")
    p.set_defaults(func=report)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `adp-cost-report` command."""
    p = argparse.ArgumentParser(prog="adp-cost-report", description="Spend report from the cost service.")
    p.add_argument("--nats-url", default=os.environ.get("ADP_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("ADP_SUBJECT_PREFIX", "adp"), help="subject prefix")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--timeout", type=float, default=10.0)
    add_report_args(p)
    return p


def _table(title: str, rows: list[CostRow], total: Decimal | None = None) -> str:
    lines = [title]
    if not rows:
        return "\n".join([*lines, "  (nothing)"])
    width = max(12, *(len(r.key) for r in rows))
    lines.append(f"  {'key':<{width}}  {'cost USD':>14}  {'requests':>9}  {'in tokens':>11}  {'out tokens':>11}")
    for r in rows:
        lines.append(
            f"  {r.key:<{width}}  {r.cost_usd:>14.6f}  {r.requests:>9}  {r.input_tokens:>11}  {r.output_tokens:>11}"
        )
    if total is not None:
        lines.append(f"  {'total':<{width}}  {total:>14.6f}")
    return "\n".join(lines)


async def gather(args: argparse.Namespace) -> dict[str, CostSummary]:
    bus = await Bus.connect(args.nats_url, prefix=args.prefix, name="adp-cost-report", connect_timeout=args.timeout)
    try:
        subject = bus.catalog.cost_query

        async def ask(**kw: object) -> CostSummary:
            q = CostQuery(start_date=args.start, end_date=args.end, user_id=args.user, **kw)
            return await bus.request(subject, q, timeout=args.timeout, response_model=CostSummary)

        summary, by_user, today = await asyncio.gather(
            ask(kind="summary"),
            ask(kind="by_user", limit=args.top),
            bus.request(subject, CostQuery(kind="budget"), timeout=args.timeout, response_model=CostSummary),
        )
        return {"today": today, "summary": summary, "by_user": by_user}
    finally:
        await bus.close(grace=1)


def render(args: argparse.Namespace, res: dict[str, CostSummary]) -> str:
    today, summary, by_user = res["today"], res["summary"], res["by_user"]
    out = []
    b = today.budget
    if b is not None:
        state = "EXCEEDED" if b.exceeded else "ok"
        out.append(f"Spend today (UTC): {b.current:.6f} of {b.limit:.2f} USD ({b.percentage:.2f}%) {state}")
    days = sorted({d.date for d in summary.dailyCosts})
    span = f"{days[0]} .. {days[-1]}" if days else "no spend"
    who = f" for user {args.user}" if args.user else ""
    out.append(f"\nRange{who}: {args.start or 'last 30 days'} .. {args.end or 'today'} ({span})")
    out.append(_table("\nBy provider:", summary.costByProvider, summary.totalCost))
    out.append(_table("\nBy user:", by_user.rows))
    if summary.userCost is not None:
        out.append(f"\nUser {args.user}: {summary.userCost:.6f} USD")
    return "\n".join(out)


def report(args: argparse.Namespace) -> int:
    try:
        res = asyncio.run(gather(args))
    except PlatformError as err:
        print(f"cost report: {err.code.value}: {err.message}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, NatsError) as err:
        print(f"cost report: cannot reach NATS at {args.nats_url}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v.model_dump(mode="json") for k, v in res.items()}, indent=2))
    else:
        print(render(args, res))
    return 0


def main(argv: list[str] | None = None) -> int:
    return report(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
