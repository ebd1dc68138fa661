"""`adp up` supervises: gateway copies share one port, a killed process is started again (with back-off)
and reported, and `adp status` shows the restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adp_cli import servers
from adp_cli.supervisor import STATE_FILE, restart_delay
from adp_common import db
from adp_testing.launcher import launcher_env, read_until, start_launcher


def test_restart_back_off_doubles_while_a_copy_keeps_crashing() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert restart_delay(12) == 30.0  # capped


async def instances_behind(port: int, probes: int = 40) -> set[str]:
    """Instance ids answering /health on `port`, each probe on a new connection."""
    seen: set[str] = set()
    async with httpx.AsyncClient(timeout=3, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(probes):
            r = await client.get(f"http://127.0.0.1:{port}/health")
            assert r.status_code == 200, r.text
            seen.add(r.json()["instance"])
    return seen


def processes(data_dir: Path) -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in json.loads((data_dir / STATE_FILE).read_text())["processes"]}


@pytest.mark.slow
async def test_adp_up_shares_the_gateway_port_and_restarts_a_killed_copy(
    nats_url: str, pg_dsn: str, prefix: str, tmp_path: Path
) -> None:
    port = servers.free_port()
    env = launcher_env(pg_dsn, prefix, "adp_supervisor_test_key_123456", nats_url)
    args = ["up", "--port", str(port), "--data-dir", str(tmp_path), "--quiet", "--scale", "gateway=2"]
    launcher = start_launcher(args, env)
    lines: list[str] = []
    try:
        await read_until(launcher, "Stop:", lines)
        procs = processes(tmp_path)
        gateways = [procs["gateway-1"], procs["gateway-2"]]
        assert [g["port"] for g in gateways] == [port, port], gateways
        assert len(await instances_behind(port)) == 2  # the kernel spreads connections over both copies

        os.kill(int(gateways[0]["pid"]), signal.SIGKILL)  # the copy that started first
        assert len(await instances_behind(port, probes=20)) == 1  # the address stays up on the other copy

        await read_until(launcher, "gateway-1 restarted", lines, timeout=30)
        out = "".join(lines)
        assert "!! gateway-1 exited with -9; restarting in 1 s" in out, out
        again = processes(tmp_path)["gateway-1"]
        assert again["restarts"] == 1 and again["pid"] != gateways[0]["pid"] and again["last_exit"] == -9
        deadline = time.monotonic() + 60
        while len(await instances_behind(port)) < 2:  # the restarted copy serves the port again
            assert time.monotonic() < deadline, "the restarted gateway never took its share"
            await asyncio.sleep(0.5)

        status = subprocess.run(
            [sys.executable, "-m", "adp_cli.main", "status", "--data-dir", str(tmp_path), "--prefix", prefix],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        row = next(line for line in status.stdout.splitlines() if line.startswith("gateway-1 "))
        assert row.split()[-2:] == ["1", "-9"], status.stdout  # RESTARTS, LAST EXIT

        launcher.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(launcher.wait, 60) == 0
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        if launcher.poll() is None:  # a failed test: let the launcher stop its processes first
            launcher.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(launcher.wait, 40)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        if (tmp_path / STATE_FILE).exists():  # processes the launcher could not stop
            for left in processes(tmp_path).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(str(left["pid"])), signal.SIGKILL)
        for base in ("gateway", "dialogue", "cost", "alerts"):
            await db.drop_database(pg_dsn, f"{base}_{prefix}")
        from adp_testing.fixtures import cleanup_prefix

        await cleanup_prefix(nats_url, prefix)
