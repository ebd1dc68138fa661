"""Infrastructure faults on the whole platform (every service a separate process): NATS restarted, and
PostgreSQL unreachable for 10 s. This module runs its own NATS server (so it can restart it) and puts a
TCP relay in front of PostgreSQL (so it can cut it off).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from adp_cli import servers
from adp_testing.platform import EventLog, Platform, running_platform
from adp_testing.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow


@dataclass
class Infra:
    platform: Platform
    nats: servers.Started
    nats_dir: Path
    nats_port: int
    pg: TcpProxy


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def infra(pg_dsn: str) -> AsyncIterator[Infra]:
    nats_dir = Path(tempfile.mkdtemp(prefix="adp-e2e-nats-"))
    port = servers.free_port()
    nats = await asyncio.to_thread(servers.start_embedded_nats, nats_dir, port)
    target = urlsplit(pg_dsn)
    if not target.hostname:
        pytest.skip("PostgreSQL is reached over a unix socket here; the relay needs TCP")
    proxy = await TcpProxy(target.hostname, target.port or 5432).start()
    proxied = pg_dsn.replace(f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{proxy.port}", 1)
    if proxied == pg_dsn:
        proxied = pg_dsn.replace(f"@{target.hostname}/", f"@127.0.0.1:{proxy.port}/", 1)
    holder: dict[str, servers.Started] = {"nats": nats}
    try:
        async with running_platform(
            nats.url, proxied, replicas=1, env={"ADP_STEP_ACK_WAIT_S": "3", "ADP_STEP_PROGRESS_S": "1"}
        ) as p:
            infra = Infra(p, nats, nats_dir, port, proxy)
            yield infra
            holder["nats"] = infra.nats
    finally:
        proxy.restore()
        await proxy.stop()
        holder["nats"].stop()
        shutil.rmtree(nats_dir, ignore_errors=True)


async def test_nats_restart_loses_nothing(infra: Infra) -> None:
    p = infra.platform
    _, key = await p.new_user("through-restart")
    did = await p.start_discussion(key, "Keep going while the message bus restarts.")
    log = EventLog(p, key, did).start()
    try:
        await log.wait_for("round-complete", 1)
        infra.nats.stop()
        await asyncio.sleep(1.0)
        infra.nats = await asyncio.to_thread(servers.start_embedded_nats, infra.nats_dir, infra.nats_port)
        await p.wait_health(200, 60)
        await p.proceed(key, did)
        await log.wait_for("round-complete", 2, timeout=90)
        async with p.client(key) as c:
            view = (await c.get(f"/api/discussions/{did}")).json()
        turns = [(m["round"], m["turn"]) for m in view["messages"]]
        assert len(turns) == len(set(turns)) == 6
        ids = log.durable_ids()
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a durable event was lost or repeated"
    finally:
        await log.stop()


async def test_postgres_unreachable_for_ten_seconds(infra: Infra) -> None:
    p = infra.platform
    _, key = await p.new_user("through-db-outage")
    did = await p.start_discussion(key, "Keep going while the database is away.")
    log = EventLog(p, key, did).start()
    try:
        await log.wait_for("round-complete", 1)
        await p.proceed(key, did)  # round 2 starts; its steps need the database
        await log.wait_for("message-start", 4)
        infra.pg.cut()
        cut_at = time.monotonic()
        await p.wait_health(503, 10)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - cut_at)))
        infra.pg.restore()
        await p.wait_health(200, 60)
        # No step lost: round 2 completes once the database is back, each turn stored once.
        await log.wait_for("round-complete", 2, timeout=90)
        async with p.client(key) as c:
            view = (await c.get(f"/api/discussions/{did}")).json()
        turns = [(m["round"], m["turn"]) for m in view["messages"]]
        assert len(turns) == len(set(turns)) == 6
    finally:
        infra.pg.restore()
        await log.stop()
