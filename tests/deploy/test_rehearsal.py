"""The runbook's fault rehearsal, run as written: the set-up variables and every `$ command` of the
"Fault rehearsal" section of docs/operations.md, on a real platform (every service a process, real NATS and
PostgreSQL) with no provider key. Each command must print the lines the runbook says it prints."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adp_testing.platform import ADMIN_KEY, running_platform

REPO = Path(__file__).resolve().parents[2]
STEP_TIMEOUT_S = 45.0


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def setup_env(text: str) -> dict[str, str]:
    """The `export NAME=value` lines of the set-up block."""
    env: dict[str, str] = {}
    for block in fenced(text, "bash"):
        for line in block.splitlines():
            if line.startswith("export ") and "<" not in line:
                for word in shlex.split(line)[1:]:
                    name, _, value = word.partition("=")
                    env[name] = value
    return env


def steps(text: str) -> list[Step]:
    out: list[Step] = []
    for block in fenced(text, "console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append(Step(line[2:]))
            elif line.strip():
                out[-1].expected.append(line)
    return out


def matches(expected: str, output: str) -> bool:
    """Some output line holds the expected line's words in order (other columns may sit between them)."""
    words = expected.split()
    for line in output.splitlines():
        rest = line.split()
        i = 0
        for w in rest:
            if i < len(words) and w == words[i]:
                i += 1
        if i == len(words):
            return True
    return False


def test_the_rehearsal_section_is_parsed() -> None:
    text = section((REPO / "docs/operations.md").read_text(), "Fault rehearsal")
    env = setup_env(text)
    assert {"ADP_ROUTER_PROVIDERS", "ADP_ROUTER_ROUTES", "ADP_COST_PRICES"} <= set(env)
    commands = [s.command.split()[0] for s in steps(text)]
    assert commands.count("adp") >= 10 and "curl" in commands
    assert matches("simulated open", "simulated  open  no  0.0%") and not matches("simulated open", "simulated closed")


@pytest.mark.slow
async def test_fault_rehearsal_runs_as_written(nats_url: str, pg_dsn: str) -> None:
    if not shutil.which("curl") or not shutil.which("jq"):
        pytest.skip("the runbook's commands use curl and jq")
    text = section((REPO / "docs/operations.md").read_text(), "Fault rehearsal")
    async with running_platform(nats_url, pg_dsn, replicas=1, env=setup_env(text)) as platform:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "ADP_NATS_URL": nats_url,
            "ADP_SUBJECT_PREFIX": platform.prefix,
            "ADP_GATEWAY_URL": platform.gateways[0],
            "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
        }
        for step in steps(text):
            await run_step(step, env)
        await run_maintenance_commands(env)


async def run_maintenance_commands(env: dict[str, str]) -> None:
    """The maintenance checks that run against a local platform: every `adp` command of the Maintenance
    section that only reads, and its curl of /api/metrics (the compose URL pointed at this platform)."""
    text = section((REPO / "docs/operations.md").read_text(), "Maintenance")
    commands = re.findall(r"`((?:adp [a-z][^`]*)|(?:curl [^`]*/api/metrics[^`]*))`", text)
    reads = [c for c in commands if not re.search(r"--ack|backup|restore|--set", c)]
    assert len(reads) >= 5, reads
    for command in reads:
        command = command.replace("http://127.0.0.1:8080", env["ADP_GATEWAY_URL"])
        proc = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", f"set -o pipefail; {command}"], env=env, capture_output=True, text=True
        )
        # 0: all well, 1: the command found a problem (both are answers); anything else is a broken command
        assert proc.returncode in (0, 1) and proc.stdout.strip(), (command, proc.returncode, proc.stderr)


async def run_step(step: Step, env: dict[str, str]) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        proc = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", step.command], env=env, capture_output=True, text=True, timeout=120
        )
        missing = [e for e in step.expected if not matches(e, proc.stdout)]
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"`{step.command}` printed:\n{proc.stdout}{proc.stderr}\nwithout: {missing}")
        await asyncio.sleep(1)
