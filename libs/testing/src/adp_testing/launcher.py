"""`adp up` as a child process, for the launcher's own tests: its environment, and its output read line by line
until a marker (the banner's last line is `Stop: …`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time


def launcher_env(pg_dsn: str, prefix: str, key: str, nats_url: str | None = None) -> dict[str, str]:
    """This process's environment without any ADP_ setting, then the test's servers, prefix and admin key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    env.update(ADP_DATABASE_URL=pg_dsn, ADP_SUBJECT_PREFIX=prefix, ADP_DB_SUFFIX=prefix, ADP_BOOTSTRAP_API_KEY=key)
    if nats_url is not None:
        env["ADP_NATS_URL"] = nats_url
    return env


def start_launcher(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`adp <args>`, its output and errors on one text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "adp_cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def read_until(proc: subprocess.Popen[str], marker: str, lines: list[str], timeout: float = 150) -> None:
    """Read the launcher's output into `lines` until a line holds `marker`; fails on its exit or the timeout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), deadline - time.monotonic())
        assert line, "launcher exited early:\n" + "".join(lines)
        lines.append(line)
        if marker in line:
            return
