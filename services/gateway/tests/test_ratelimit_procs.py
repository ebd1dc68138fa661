"""Rate limits across two gateway processes sharing Redis, and with Redis unreachable (local fallback)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adp_testing.gateway import ADMIN_KEY, assert_envelope

pytestmark = pytest.mark.slow

LOW = {
    "ADP_BOOTSTRAP_API_KEY": ADMIN_KEY,
    "ADP_RATE_LIMIT_REQUESTS": "1000",
    "ADP_RATE_LIMIT_SUMMARY": "2",
    "ADP_RATE_LIMIT_START": "3",
    "ADP_RATE_LIMIT_WINDOW_S": "60",
}

DISCUSSION = "0b1e6c1e2f3a4b5c8d9e0f1a2b3c4d5e"  # a well-formed id; dialogue is not running


async def within_one_window(window_s: int, needed_s: float) -> None:
    """The limits count in fixed windows: when the current one ends within `needed_s` (the time the counted
    requests that follow take — each refused by the absent dialogue service after ~0.75 s of retries), wait
    for the next, so the requests cannot straddle two windows and start counting afresh."""
    left = window_s - time.time() % window_s
    if left < needed_s:
        await asyncio.sleep(left + 0.1)


async def test_limits_shared_across_copies_and_enforced_without_redis(processes, redis_url: str) -> None:
    # a generous Redis timeout: on a busy machine a slow first round trip would fall back to local counters
    # (by design), and the copies would then no longer share the window this test is about
    shared_env = {**LOW, "ADP_REDIS_URL": redis_url, "ADP_REDIS_TIMEOUT_S": "3"}
    shared = await processes.start_healthy(["gateway"], replicas=2, extra_env=shared_env)
    dead = await processes.start_healthy(
        ["gateway"], extra_env={**LOW, "ADP_REDIS_URL": "redis://127.0.0.1:1/0", "ADP_REDIS_TIMEOUT_S": "0.2"}
    )
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(headers=auth, timeout=10) as c:
        # 'summary' allows 2 per window per key: alternate between the two copies sharing Redis.
        statuses = []
        await within_one_window(60, 15)
        for i in range(4):
            r = await c.post(f"{shared[i % 2].url}/api/discussions/{DISCUSSION}/summary")
            statuses.append(r.status_code)
        assert statuses[:2] == [503, 503]  # counted, then refused by the absent dialogue service
        for s in statuses[2:]:
            assert s == 429
        r = await c.post(f"{shared[1].url}/api/discussions/{DISCUSSION}/summary")
        assert_envelope(r, 429, "RATE_LIMIT_EXCEEDED")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Reads are not counted.
        assert (await c.get(f"{shared[0].url}/api/discussions")).status_code == 503
        # The copy with a dead Redis still enforces its own window ('start' allows 3).
        await within_one_window(60, 15)
        got = [
            (await c.post(f"{dead[0].url}/api/discussions", json={"topic": "rate limited topic"})).status_code
            for _ in range(5)
        ]
        assert got[:3] == [503, 503, 503] and got[3:] == [429, 429]
        health = (await c.get(f"{dead[0].url}/api/health")).json()
        assert health["components"]["redis"]["status"] == "DOWN"
