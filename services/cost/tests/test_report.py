"""`adp cost report` (and `adp-cost-report`) against a running cost service over the bus."""

from __future__ import annotations

import subprocess
import sys

from adp_cli.cost_report import build_parser, gather, render

from .conftest import T0, CostEnv, make_record, run_cost


async def test_report_prints_today_by_provider_and_by_user(cost_env: CostEnv, nats_url: str, prefix: str) -> None:
    async with run_cost(cost_env):
        await cost_env.publish(
            [
                make_record(provider="mistral", input_tokens=1_000_000, output_tokens=0, user_id="alice"),
                make_record(provider="groq", input_tokens=1_000_000, output_tokens=0, user_id="bob"),
            ]
        )
        await cost_env.wait_ledger(2)
        args = build_parser().parse_args(["--nats-url", nats_url, "--prefix", prefix, "--end", T0.date().isoformat()])
        text = render(args, await gather(args))
    assert "Spend today (UTC): 2.770000 of 10.00 USD (27.70%) ok" in text
    lines = text.splitlines()
    provider_rows = lines[lines.index("By provider:") + 2 :][:3]
    assert provider_rows[0].split()[:2] == ["mistral", "2.500000"]
    assert provider_rows[1].split()[:2] == ["groq", "0.270000"]
    assert provider_rows[2].split()[:2] == ["total", "2.770000"]
    assert any(line.split()[:2] == ["alice", "2.500000"] for line in lines)


def test_report_without_a_cost_service_fails_clearly(nats_url: str, prefix: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "adp_cli.cost_report", "--nats-url", nats_url, "--prefix", prefix, "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "SERVICE_UNAVAILABLE" in proc.stderr
    family_argv = ["cost", "report", "--nats-url", nats_url, "--prefix", prefix, "--timeout", "1"]
    family = subprocess.run(
        [sys.executable, "-m", "adp_cli.main", *family_argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert family.returncode == 2 and "SERVICE_UNAVAILABLE" in family.stderr


def test_report_json_flag_parses() -> None:
    args = build_parser().parse_args(["--json", "--start", "2025-01-01", "--user", "u"])
    assert args.json and args.start.isoformat() == "2025-01-01" and args.user == "u"
