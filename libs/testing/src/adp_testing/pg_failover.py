"""A PostgreSQL primary with a synchronous streaming standby, for primary-switch tests: the shape of a
CloudNativePG cluster or a managed service with a standby, on one machine from the local PostgreSQL binaries.

`promote()` stops the primary at once (as a crashed node) and promotes the standby; with synchronous commit
every transaction the primary confirmed is on the standby. The tests put a `TcpProxy` in front and point it
at the promoted server, as the operator's service name or the managed service's endpoint does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from adp_cli.servers import free_port, port_open

OS_USER = "postgres"  # PostgreSQL refuses to run as root: as root the servers run as this user


def bin_dir() -> Path | None:
    """Where initdb, pg_ctl and pg_basebackup are (pg_config's answer, else PATH)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = Path(
            subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
        if (found / "initdb").exists():
            return found
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def unavailable() -> str | None:
    """Why a pair cannot run here (None when it can)."""
    binaries = bin_dir()
    if binaries is None or not all((binaries / b).exists() for b in ("initdb", "pg_ctl", "pg_basebackup")):
        return "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root and no {OS_USER!r} user to run PostgreSQL as"
    return None


@dataclass
class PgPair:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="adp-pg-pair-")))
    primary_port: int = field(default_factory=free_port)
    standby_port: int = field(default_factory=free_port)
    promoted: bool = False

    @property
    def primary_dir(self) -> Path:
        return self.root / "primary"

    @property
    def standby_dir(self) -> Path:
        return self.root / "standby"

    def dsn(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        binaries = bin_dir()
        assert binaries is not None
        cmd = [str(binaries / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")

    def _start(self, data: Path, port: int) -> None:
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / f"{data.name}.log"), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL {data.name} is not listening on {port}")
            time.sleep(0.1)

    def start(self) -> PgPair:
        if os.geteuid() == 0:
            shutil.chown(self.root, OS_USER)
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.primary_port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            "fsync": "off",  # a test's data: durability against power loss is not what is tested
            # a commit returns once the standby has it: the promoted server has every confirmed transaction
            "synchronous_standby_names": "'*'",
            "synchronous_commit": "on",
        }
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        with open(self.primary_dir / "pg_hba.conf", "a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self._start(self.primary_dir, self.primary_port)
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream",
        )  # fmt: skip
        with open(self.standby_dir / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.standby_port}\nsynchronous_standby_names = ''\n")
        self._start(self.standby_dir, self.standby_port)
        return self

    def promote(self) -> None:
        """The primary stops at once (no shutdown checkpoint, as a crash) and the standby takes over."""
        self._run("pg_ctl", "-D", str(self.primary_dir), "-m", "immediate", "stop")
        self._run("pg_ctl", "-D", str(self.standby_dir), "-w", "-t", "60", "promote")
        self.promoted = True

    def stop(self) -> None:
        for data in (self.standby_dir, self.primary_dir):
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self._run("pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
