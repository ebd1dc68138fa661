"""Start the stamped fake provider and the five services as OS processes, sample their RSS/CPU, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from adp_cli.procs import START_ORDER, Proc, ProcessManager, free_port
from adp_common import db
from adp_testing.fixtures import cleanup_prefix

ADMIN_KEY = "adp_bench_admin_key_" + "0123456789abcdef"
ALIASES = {"router": "llm-router", "llm": "llm-router"}


def parse_replicas(text: str) -> dict[str, int]:
    """`router=2,dialogue=2` -> {'llm-router': 2, 'dialogue': 2, others: 1}."""
    out = dict.fromkeys(START_ORDER, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, n = part.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if name not in out:
            raise SystemExit(f"--replicas: unknown service {name!r} (known: {', '.join(START_ORDER)})")
        out[name] = int(n)
    return out


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


class FakeProviderProcess:
    def __init__(
        self, *, ttft_ms: float, tokens_per_s: float, tokens: int, jitter: float, log: Path, stamp_every: int = 5
    ) -> None:
        self.port = free_port()
        script = Path(__file__).with_name("provider.py")
        args = [sys.executable, str(script), "--port", str(self.port), "--ttft-ms", str(ttft_ms)]
        args += ["--tokens-per-s", str(tokens_per_s), "--tokens", str(tokens), "--jitter", str(jitter)]
        args += ["--stamp-every", str(stamp_every)]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait(self) -> None:
        task = asyncio.create_task(wait_http(self.url + "/_stats"))
        while not task.done():
            if self.popen.poll() is not None:
                task.cancel()
                raise RuntimeError(f"fake provider exited with {self.popen.returncode}")
            await asyncio.sleep(0.1)
        task.result()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Platform:
    """One launch of the platform (its own subject prefix and databases)."""

    nats_url: str
    pg_dsn: str
    redis_url: str
    provider_url: str
    replicas: dict[str, int]
    log_dir: Path
    worker_concurrency: int
    extra_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    prefix: str = field(default_factory=lambda: "lb" + uuid.uuid4().hex[:10])
    manager: ProcessManager | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
        base = self.provider_url + "/v1"
        chain = ["fake/fake-model"]
        env.update(
            {
                "ADP_NATS_URL": self.nats_url,
                "ADP_DATABASE_URL": self.pg_dsn,
                "ADP_REDIS_URL": self.redis_url,
                "ADP_SUBJECT_PREFIX": self.prefix,
                "ADP_DB_SUFFIX": self.prefix,
                "ADP_LOG_LEVEL": self.log_level,
                "ADP_SHUTDOWN_GRACE_S": "5",
                # llm-router: only the fake provider, every route on it
                "ADP_ROUTER_SIMULATED": "never",
                "ADP_ROUTER_PROVIDERS": json.dumps(
                    {"fake": {"kind": "openai", "base_url": base, "api_key": "bench-dummy", "models": ["fake-model"]}}
                ),
                "ADP_ROUTER_ROUTES": json.dumps({r: chain for r in ("default", "analyzer", "solver", "moderator")}),
                # gateway: a first key, no rate limits (one client IP), no shedding below our load
                "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
                "ADP_RATE_LIMIT_ENABLED": "false",
                "ADP_MAX_INFLIGHT": "4096",
                "ADP_MAX_STREAMS": "4096",
                "ADP_MAX_CONNECTIONS_PER_CLIENT": "100000",  # every benchmark connection comes from one address
                # dialogue: every discussion streaming at once; round 1 only
                "ADP_MAX_ACTIVE_DISCUSSIONS": "100000",
                "ADP_WORKER_CONCURRENCY": str(self.worker_concurrency),
                "ADP_AUTO_QUESTIONS": "false",
                # cost: a budget the benchmark cannot exhaust
                "ADP_COST_DAILY_BUDGET_USD": "1000000",
            }
        )
        env.update(self.extra_env)
        return env

    async def start(self) -> None:
        self.manager = ProcessManager(env=self.env(), log_dir=self.log_dir / self.prefix)
        procs = [self.manager.start(svc) for svc in START_ORDER for _ in range(self.replicas.get(svc, 1))]
        await self.manager.wait_healthy(procs, timeout=90)

    @property
    def procs(self) -> list[Proc]:
        return self.manager.procs if self.manager else []

    @property
    def gateways(self) -> list[str]:
        return [p.url for p in self.procs if p.service == "gateway"]

    async def stop(self) -> None:
        if self.manager is not None:
            await asyncio.to_thread(self.manager.stop_all, 10.0)
        with contextlib.suppress(Exception):
            await cleanup_prefix(self.nats_url, self.prefix)
        for base in ("gateway", "dialogue", "cost", "alerts"):
            with contextlib.suppress(Exception):
                await db.drop_database(self.pg_dsn, f"{base}_{self.prefix}")


def cpu_seconds(p: psutil.Process) -> float:
    """CPU time (user + system) the process has used so far."""
    t = p.cpu_times()
    return t.user + t.system


def syscalls(p: psutil.Process) -> tuple[int, int]:
    """Read and write system calls so far (/proc/<pid>/io: syscr, syscw; sockets included)."""
    c = p.io_counters()
    return c.read_count, c.write_count


class ResourceSampler:
    """RSS (at the window's start, its end, and the max between) and CPU (% of one core, averaged over the
    window) of named processes. Start and end tell memory that grows with the work done from memory that
    follows the load."""

    def __init__(
        self, named: dict[str, int], interval: float = 0.5, groups: dict[str, list[int]] | None = None
    ) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for name, pid in named.items():
            with contextlib.suppress(psutil.Error):
                self.procs[name] = psutil.Process(pid)
        # CPU only, summed over several processes (e.g. PostgreSQL's backends; their RSS is mostly shared)
        self.groups: dict[str, list[psutil.Process]] = {}
        for name, pids in (groups or {}).items():
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    self.groups.setdefault(name, []).append(psutil.Process(pid))
        self._group_cpu0: dict[str, float] = {}
        self.interval = interval
        self.rss_max: dict[str, int] = {}
        self.rss_first: dict[str, int] = {}
        self.rss_last: dict[str, int] = {}
        self._cpu0: dict[str, float] = {}
        self._io0: dict[str, tuple[int, int]] = {}
        self._t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self.result: dict[str, dict[str, Any]] = {}
        # per interval: (seconds since start, machine CPU % of all cores, {process: CPU % of one core},
        # steal % of all cores: time the hypervisor gave this VM's CPUs to someone else)
        self.timeline: list[tuple[float, float, dict[str, float], float]] = []
        self._last_cpu: dict[str, float] = {}
        self._last_t = 0.0

    def _group_cpu(self, name: str) -> float:
        total = 0.0
        for p in self.groups[name]:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(p)
        return total

    def _sample(self) -> None:
        now = time.monotonic()
        dt = max(1e-6, now - self._last_t)
        cpu_now: dict[str, float] = {}
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                self.rss_max[name] = max(self.rss_max.get(name, 0), rss)
                self.rss_first.setdefault(name, rss)
                self.rss_last[name] = rss
                cpu_now[name] = cpu_seconds(p)
        for name in self.groups:
            cpu_now[name] = self._group_cpu(name)
        if self._last_cpu:
            per = {k: round(100.0 * (v - self._last_cpu[k]) / dt, 1) for k, v in cpu_now.items() if k in self._last_cpu}
            steal = getattr(psutil.cpu_times_percent(), "steal", 0.0)
            self.timeline.append((round(now - self._t0, 2), psutil.cpu_percent(), per, steal))
        else:
            psutil.cpu_percent()  # starts the machine-wide counters
            psutil.cpu_times_percent()
        self._last_cpu, self._last_t = cpu_now, now

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._t0 = self._last_t = time.monotonic()
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self._cpu0[name] = cpu_seconds(p)
            with contextlib.suppress(psutil.Error, AttributeError):
                self._io0[name] = syscalls(p)
        for name in self.groups:
            self._group_cpu0[name] = self._group_cpu(name)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, dict[str, Any]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        wall = max(1e-6, time.monotonic() - self._t0)
        for name, p in self.procs.items():
            cpu = None
            with contextlib.suppress(psutil.Error):
                if name in self._cpu0:
                    cpu = 100.0 * (cpu_seconds(p) - self._cpu0[name]) / wall
            rss = self.rss_max.get(name)
            self.result[name] = {"rss_mb": rss / 2**20 if rss else None, "cpu_pct": cpu}
            if name in self.rss_first:
                self.result[name]["rss_start_mb"] = self.rss_first[name] / 2**20
                self.result[name]["rss_end_mb"] = self.rss_last[name] / 2**20
            with contextlib.suppress(psutil.Error, AttributeError):
                if name in self._io0:
                    r, w = syscalls(p)
                    self.result[name]["reads_per_s"] = (r - self._io0[name][0]) / wall
                    self.result[name]["writes_per_s"] = (w - self._io0[name][1]) / wall
        for name in self.groups:
            cpu = 100.0 * (self._group_cpu(name) - self._group_cpu0[name]) / wall
            self.result[name] = {"rss_mb": None, "cpu_pct": cpu}
        return self.result


def postgres_pids() -> list[int]:
    """Every local PostgreSQL process (server and backends), for CPU context; read-only look-up by name."""
    return [p.pid for p in psutil.process_iter(["name"]) if (p.info.get("name") or "").startswith("postgres")]


def external_pids() -> dict[str, int]:
    """The local NATS server (for CPU context); read-only look-up by process name."""
    out: dict[str, int] = {}
    for p in psutil.process_iter(["name"]):
        name = (p.info.get("name") or "").lower()
        if name.startswith("nats-server") and "nats-server" not in out:
            out["nats-server"] = p.pid
    return out
