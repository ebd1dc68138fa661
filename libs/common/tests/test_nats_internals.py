"""The nats-py internals wall: the reviewed release uses the private fast paths, and every other release
gets the public-API fallback, which must behave the same (only a turn of the event loop slower)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from nats.aio.msg import Msg
from pydantic import BaseModel

from adp_common.bus import Bus, RequestContext, nats_internals, send_now


class Ping(BaseModel):
    n: int


@pytest.fixture(params=[True, False], ids=["private-api", "public-fallback"])
def private_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    monkeypatch.setattr(nats_internals, "USE_PRIVATE_API", request.param)
    yield request.param


def test_only_reviewed_releases_use_the_private_api() -> None:
    assert nats_internals.reviewed("2.16.0") and nats_internals.reviewed("2.16.3")
    assert not nats_internals.reviewed("2.17.0") and not nats_internals.reviewed("3.0.0")


def test_the_installed_release_is_reviewed() -> None:
    """Fails after a nats-py upgrade: review adp_common/bus/nats_internals.py, then add the release."""
    assert nats_internals.USE_PRIVATE_API, f"nats-py {nats_internals.INSTALLED} is not a reviewed release"


async def test_inline_subscription_delivers_in_order_on_both_paths(bus: Bus, private_api: bool) -> None:
    subject = bus.catalog.subject("svc", f"inline-{uuid.uuid4().hex[:6]}")
    seen: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("a failing handler must not break the subscription")
        seen.append(msg.data)

    sub = await bus.subscribe_inline(subject, handler)
    for i in range(50):
        await bus.nc.publish(subject, b"boom" if i == 25 else str(i).encode())
    await bus.nc.flush()
    for _ in range(100):
        if len(seen) == 49:
            break
        await asyncio.sleep(0.01)
    assert seen == [str(i).encode() for i in range(50) if i != 25]
    assert sub.pending_bytes == 0 and bus.nc.is_connected
    assert (sub._pending_queue.__class__.__name__ == "_Inline") is private_api
    await sub.unsubscribe()
    await bus.nc.publish(subject, b"after")
    await bus.nc.flush()
    await asyncio.sleep(0.05)
    assert seen[-1] == b"49"  # nothing after unsubscribing


async def test_endpoints_answer_and_count_requests_on_both_paths(
    bus: Bus, nats_url: str, prefix: str, private_api: bool
) -> None:
    name = f"walled-{uuid.uuid4().hex[:8]}"
    server = await Bus.connect(nats_url, prefix=prefix, name=name, instance="a", handler_concurrency=2)
    try:

        async def handle(req: Ping, ctx: RequestContext) -> Ping:
            await asyncio.sleep(0.01)
            return Ping(n=req.n + 1)

        subject = bus.catalog.subject("svc", f"walled-{name}")
        await server.serve(subject, handle, Ping)
        replies = await asyncio.gather(*(bus.request(subject, Ping(n=i), response_model=Ping) for i in range(5)))
        assert sorted(r.n for r in replies) == [1, 2, 3, 4, 5]
        stats = json.loads((await bus.nc.request(f"$SRV.STATS.{name}", b"", timeout=2)).data)
        assert stats["endpoints"][0]["num_requests"] == 5
    finally:
        await server.close(grace=1)


async def test_send_now_without_the_private_api_leaves_the_write_to_the_flusher(bus: Bus, private_api: bool) -> None:
    subject = bus.catalog.subject("svc", f"now-{uuid.uuid4().hex[:6]}")
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    await bus.subscribe_inline(subject, lambda msg: got.done() or got.set_result(msg.data))
    await bus.nc.publish(subject, b"queued")
    send_now(bus.nc)
    assert (bus.nc._pending_data_size == 0) is private_api  # written at once, or still queued
    assert await asyncio.wait_for(got, 2) == b"queued"
