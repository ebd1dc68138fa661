"""pytest fixtures shared by every test in the repo (loaded from the root conftest.py).

Each test gets its own subject prefix, hence its own streams and KV buckets, and its own databases;
all are removed at teardown. Real servers only: see adp_cli.servers for where they come from.
ADP_TEST_NATS_CLUSTER=3 runs every test on an embedded three-server JetStream cluster instead, with every
stream and bucket replicated three times (ADP_STREAM_REPLICAS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from adp_cli import servers
from adp_cli.nats_cluster import NatsCluster, start_nats_cluster
from adp_common import db
from adp_common.bus import Bus
from adp_testing.procs import ServiceProcesses, cluster_size, stream_replicas


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A three-server JetStream cluster (or ADP_TEST_NATS_CLUSTER servers) on free ports."""
    cluster = start_nats_cluster(cluster_size() or 3, tmp_path_factory.mktemp("nats-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if cluster_size():
        # services run inside the tests read their settings from the environment too
        os.environ.setdefault("ADP_STREAM_REPLICAS", str(stream_replicas()))
        yield request.getfixturevalue("nats_cluster").url
        return
    started = servers.resolve_nats()
    yield started.url
    started.stop()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    started = servers.resolve_postgres()
    yield started.url
    started.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    started = servers.resolve_redis()
    if started is None:
        pytest.skip("no Redis server available (set ADP_TEST_REDIS_URL)")
    yield started.url
    started.stop()


@pytest.fixture
def prefix(nats_url: str) -> Iterator[str]:
    """A subject prefix unique to this test: its streams, subjects and buckets are its own, and are deleted
    afterwards whoever created them (in-process services, processes, the test itself)."""
    p = "t" + uuid.uuid4().hex[:10]
    yield p
    asyncio.run(cleanup_prefix(nats_url, p)) if not _loop_running() else _cleanup_later(nats_url, p)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _cleanup_later(nats_url: str, p: str) -> None:
    # Inside the session's running loop (async tests): clean up in a worker thread with its own loop.
    import threading

    t = threading.Thread(target=lambda: asyncio.run(cleanup_prefix(nats_url, p)))
    t.start()
    t.join(30)


async def stream_names(bus: Bus) -> list[str]:
    """Every stream name on the server (the JetStream API pages its answer)."""
    names: list[str] = []
    while True:
        reply = await bus.nc.request("$JS.API.STREAM.NAMES", json.dumps({"offset": len(names)}).encode(), timeout=5)
        page = json.loads(reply.data)
        batch = page.get("streams") or []
        names += batch
        if not batch or len(names) >= page.get("total", 0):
            return names


async def cleanup_prefix(nats_url: str, prefix: str) -> None:
    """Delete every stream and KV bucket created under `prefix`."""
    bus = await Bus.connect(nats_url, prefix=prefix, name="cleanup")
    try:
        stream_prefix = bus.catalog.stream_name("")
        kv_prefix = "KV_" + bus.catalog.bucket("")
        for name in await stream_names(bus):
            if name.startswith(stream_prefix) or name.startswith(kv_prefix):
                with contextlib.suppress(Exception):
                    await bus.js.delete_stream(name)
    finally:
        await bus.close(grace=1)


@pytest_asyncio.fixture
async def bus(nats_url: str, prefix: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, prefix=prefix, name="test", instance="test", replicas=stream_replicas())
    try:
        yield b
    finally:
        await b.close(grace=2)
        await cleanup_prefix(nats_url, prefix)


class Databases:
    """Creates uniquely named databases and drops them at teardown."""

    def __init__(self, server_dsn: str, tag: str) -> None:
        self.server_dsn = server_dsn
        self.tag = tag
        self.created: list[str] = []

    def name(self, base: str) -> str:
        n = f"{base}_{self.tag}"
        if n not in self.created:
            self.created.append(n)
        return n

    def dsn(self, base: str) -> str:
        return db.with_database(self.server_dsn, self.name(base))

    async def connect(self, base: str) -> asyncpg.Connection:
        await db.ensure_database(self.server_dsn, self.name(base))
        return await asyncpg.connect(self.dsn(base))

    async def drop_all(self) -> None:
        for n in self.created:
            with contextlib.suppress(Exception):
                await db.drop_database(self.server_dsn, n)


@pytest_asyncio.fixture
async def databases(pg_dsn: str, prefix: str) -> AsyncIterator[Databases]:
    dbs = Databases(pg_dsn, prefix)
    try:
        yield dbs
    finally:
        await dbs.drop_all()


@pytest.fixture
def service_env(nats_url: str, pg_dsn: str, prefix: str) -> dict[str, str]:
    """Environment for starting service processes isolated to this test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")}
    env.update(
        {
            "ADP_NATS_URL": nats_url,
            "ADP_DATABASE_URL": pg_dsn,
            "ADP_SUBJECT_PREFIX": prefix,
            "ADP_DB_SUFFIX": prefix,
            "ADP_LOG_LEVEL": "INFO",
            "ADP_HEARTBEAT_INTERVAL_S": "2",
            "ADP_STREAM_REPLICAS": str(stream_replicas()),
        }
    )
    return env


@pytest_asyncio.fixture
async def processes(nats_url: str, pg_dsn: str, prefix: str) -> AsyncIterator[ServiceProcesses]:
    """Start services as separate OS processes; all are killed and their databases dropped at teardown."""
    procs = ServiceProcesses(nats_url=nats_url, pg_dsn=pg_dsn, prefix=prefix)
    try:
        yield procs
    finally:
        await procs.stop_all()
        await asyncio.sleep(0)
        await procs.drop_databases()
        await cleanup_prefix(nats_url, prefix)
