"""A PostgreSQL primary switch on the whole platform (every service a separate process): the primary fails
mid-round, its synchronous standby is promoted and the database endpoint (a TCP relay here, the service name of
a CloudNativePG cluster or a managed service's endpoint in production) points at it. The services ride it out
by reconnecting: nothing lost, nothing repeated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from adp_testing import pg_failover
from adp_testing.pg_failover import PgPair
from adp_testing.platform import EventLog, Platform, running_platform
from adp_testing.tcpproxy import TcpProxy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(pg_failover.unavailable() is not None, reason=str(pg_failover.unavailable())),
]


@dataclass
class Stack:
    platform: Platform
    pair: PgPair
    endpoint: TcpProxy


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(nats_url: str) -> AsyncIterator[Stack]:
    pair = await asyncio.to_thread(lambda: PgPair().start())
    endpoint = await TcpProxy("127.0.0.1", pair.primary_port).start()
    try:
        dsn = pair.dsn(endpoint.port)
        async with running_platform(
            nats_url, dsn, replicas=1, env={"ADP_STEP_ACK_WAIT_S": "3", "ADP_STEP_PROGRESS_S": "1"}
        ) as p:
            yield Stack(p, pair, endpoint)
    finally:
        await endpoint.stop()
        await asyncio.to_thread(pair.stop)


async def test_services_ride_out_a_primary_switch(stack: Stack) -> None:
    p = stack.platform
    _, key = await p.new_user("through-failover")
    did = await p.start_discussion(key, "Keep going while the database fails over.")
    log = EventLog(p, key, did).start()
    try:
        await log.wait_for("round-complete", 1)
        await p.proceed(key, did)  # round 2 starts; its steps write to the database
        await log.wait_for("message-start", 4)
        switched_at = time.monotonic()
        await asyncio.to_thread(stack.pair.promote)
        stack.endpoint.target = ("127.0.0.1", stack.pair.standby_port)
        stack.endpoint.cut()  # connections to the old primary end, as they do when its node goes away
        stack.endpoint.restore()
        await p.wait_health(200, 60)
        healthy_s = time.monotonic() - switched_at
        await log.wait_for("round-complete", 2, timeout=90)
        round_s = time.monotonic() - switched_at
        print(f"\nprimary switch: healthy again after {healthy_s:.1f} s, round 2 complete {round_s:.1f} s after it")
        async with p.client(key) as c:
            view = (await c.get(f"/api/discussions/{did}")).json()
        turns = [(m["round"], m["turn"]) for m in view["messages"]]
        assert len(turns) == len(set(turns)) == 6, turns  # round 1 (from before the switch) and round 2, once each
        ids = log.durable_ids()
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a durable event was lost or repeated"
        completed = sorted(e["data"]["message"]["id"] for e in log.named("message-complete"))
        assert completed == sorted(m["id"] for m in view["messages"])
    finally:
        await log.stop()
    # everything written before the switch is on the promoted server (the key still works), and new work too
    _, new_key = await p.new_user("after-failover")
    after = EventLog(p, new_key, await p.start_discussion(new_key, "Start fresh on the promoted primary.")).start()
    try:
        await after.wait_for("round-complete", 1, timeout=60)
    finally:
        await after.stop()
