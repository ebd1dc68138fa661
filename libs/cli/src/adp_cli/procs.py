"""Start, watch and stop the platform's services as separate OS processes (launcher and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from adp_cli.servers import free_port

# service name -> python module with the entry point
SERVICES: dict[str, str] = {
    "llm-router": "adp_router.main",
    "cost": "adp_cost.main",
    "alerts": "adp_alerts.main",
    "dialogue": "adp_dialogue.main",
    "gateway": "adp_gateway.main",
}
START_ORDER = ["llm-router", "cost", "alerts", "dialogue", "gateway"]


@dataclass
class Proc:
    service: str
    index: int
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path | None = None
    instance: str = ""  # ADP_INSTANCE_ID: what its /health reports (several copies may share one port)
    extra_env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0  # times this copy was started again after it exited

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ProcessManager:
    env: dict[str, str]
    log_dir: Path | None = None
    relay: IO[str] | None = None  # when set, child output is relayed here with a name prefix
    procs: list[Proc] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)

    def start(
        self,
        service: str,
        *,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
        replacing: Proc | None = None,
    ) -> Proc:
        """Start a copy of `service`; `replacing` an exited copy starts it again in its place (same name,
        port and settings, a new instance id)."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
        restarts = 0
        if replacing is not None:
            index, port, extra_env, restarts = (
                replacing.index,
                replacing.port,
                replacing.extra_env,
                replacing.restarts + 1,
            )
        else:
            index = self._counts.get(service, 0) + 1
            self._counts[service] = index
        port = port or self._unused_port()
        env = dict(self.env)
        env.update(extra_env or {})
        env["ADP_HTTP_PORT"] = str(port)
        instance = f"{service}-{index}-{os.getpid()}" + (f"-r{restarts}" if restarts else "")
        env["ADP_INSTANCE_ID"] = instance
        env.setdefault("PYTHONUNBUFFERED", "1")
        log_path = None
        if self.relay is not None:
            popen = subprocess.Popen(
                [sys.executable, "-m", SERVICES[service]],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            threading.Thread(target=self._pump, args=(f"{service}-{index}", popen), daemon=True).start()
        else:
            assert self.log_dir is not None, "log_dir or relay is required"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{service}-{index}.log"
            with open(log_path, "ab") as out:
                popen = subprocess.Popen(
                    [sys.executable, "-m", SERVICES[service]],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        proc = Proc(service, index, port, popen, log_path, instance, dict(extra_env or {}), restarts)
        if replacing is not None and replacing in self.procs:
            self.procs[self.procs.index(replacing)] = proc
        else:
            self.procs.append(proc)
        return proc

    def _unused_port(self) -> int:
        """A free port that none of this manager's processes was given: one just started may not have bound
        its port yet, and the kernel can hand the same free port out twice in a row."""
        given = {p.port for p in self.procs}
        while (port := free_port()) in given:
            pass
        return port

    def _pump(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None and self.relay is not None
        for raw in popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            with contextlib.suppress(Exception):
                self.relay.write(f"[{name}] {line}\n")
                self.relay.flush()

    async def wait_healthy(self, procs: list[Proc] | None = None, timeout: float = 60.0) -> None:
        """Wait until each process answers 200 on its /health; raise with its log tail otherwise."""
        pending = list(procs if procs is not None else self.procs)
        deadline = time.monotonic() + timeout
        # a fresh connection per probe: copies sharing a port are told apart by the instance they report
        async with httpx.AsyncClient(timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while pending:
                for proc in list(pending):
                    if not proc.alive():
                        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        r = await client.get(proc.url + "/health")
                        if r.status_code == 200 and r.json().get("instance", proc.instance) in (proc.instance, ""):
                            pending.remove(proc)
                if pending:
                    if time.monotonic() > deadline:
                        names = ", ".join(p.name for p in pending)
                        tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in pending)
                        raise TimeoutError(f"not healthy after {timeout:g}s: {names}\n{tails}")
                    await asyncio.sleep(0.2)

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)

    def stop(self, proc: Proc, grace: float = 15.0) -> int | None:
        if proc.alive():
            self.kill(proc, signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(proc, signal.SIGKILL)
                proc.popen.wait(5)
        return proc.popen.returncode

    def stop_all(self, grace: float = 15.0) -> None:
        # Reverse start order: the gateway first, so no new work arrives while others drain.
        for proc in reversed(self.procs):
            if proc.alive():
                self.kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                self.kill(proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)
