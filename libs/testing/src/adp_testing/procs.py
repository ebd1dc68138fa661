"""Service processes for integration and end-to-end tests (isolated by the test's prefix)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from adp_cli.procs import START_ORDER, Proc, ProcessManager
from adp_common import db

CLUSTER_ENV = "ADP_TEST_NATS_CLUSTER"


def cluster_size() -> int:
    """Servers of the NATS cluster the tests run on (ADP_TEST_NATS_CLUSTER), 0 for one server."""
    return int(os.environ.get(CLUSTER_ENV) or 0)


def stream_replicas() -> int:
    """Replicas of the streams and buckets the tests create: one per server of the cluster."""
    return max(1, cluster_size())


class ServiceProcesses:
    def __init__(self, *, nats_url: str, pg_dsn: str, prefix: str) -> None:
        self.prefix = prefix
        self.pg_dsn = pg_dsn
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
        env.update(
            {
                "ADP_NATS_URL": nats_url,
                "ADP_DATABASE_URL": pg_dsn,
                "ADP_SUBJECT_PREFIX": prefix,
                "ADP_DB_SUFFIX": prefix,
                "ADP_HEARTBEAT_INTERVAL_S": "2",
                "ADP_SHUTDOWN_GRACE_S": "5",
                "ADP_STREAM_REPLICAS": str(stream_replicas()),
            }
        )
        self.env = env
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"adp-{prefix}-logs-"))
        self.manager = ProcessManager(env=env, log_dir=self.log_dir)

    def start(self, service: str, extra_env: dict[str, str] | None = None) -> Proc:
        return self.manager.start(service, extra_env=extra_env)

    async def start_healthy(
        self,
        services: list[str] | None = None,
        *,
        replicas: int = 1,
        extra_env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> list[Proc]:
        procs = [self.start(svc, extra_env) for svc in (services or START_ORDER) for _ in range(replicas)]
        await self.manager.wait_healthy(procs, timeout=timeout)
        return procs

    def kill(self, proc: Proc) -> None:
        self.manager.kill(proc)
        proc.popen.wait(10)

    async def stop_all(self) -> None:
        await asyncio.to_thread(self.manager.stop_all, 10.0)

    async def drop_databases(self) -> None:
        for base in ("gateway", "dialogue", "cost", "alerts"):
            await db.drop_database(self.pg_dsn, f"{base}_{self.prefix}")
