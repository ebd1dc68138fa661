"""Bus behaviour against a real NATS server."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from urllib.parse import urlparse

import pytest
from nats.aio.msg import Msg
from pydantic import BaseModel

from adp_common.bus import Bus, Delivery, Reject, RequestContext, Retry, send_now, server_urls
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import UsageRecord


class Ping(BaseModel):
    n: int


class Pong(BaseModel):
    n: int
    who: str


async def test_request_reply_and_error_codes(bus: Bus, nats_url: str, prefix: str) -> None:
    server = await Bus.connect(nats_url, prefix=prefix, name="svc", instance="a")
    try:

        async def handle(req: Ping, ctx: RequestContext) -> Pong:
            if req.n < 0:
                raise PlatformError(ErrorCode.DISCUSSION_NOT_FOUND, "nope")
            return Pong(n=req.n * 2, who="a")

        await server.serve(bus.catalog.subject("svc", "double"), handle, Ping)
        reply = await bus.request(bus.catalog.subject("svc", "double"), Ping(n=21), response_model=Pong)
        assert reply.n == 42
        with pytest.raises(PlatformError) as err:
            await bus.request(bus.catalog.subject("svc", "double"), Ping(n=-1))
        assert err.value.code == ErrorCode.DISCUSSION_NOT_FOUND
        with pytest.raises(PlatformError) as bad:
            await bus.request(bus.catalog.subject("svc", "double"), {"n": "x"})
        assert bad.value.code == ErrorCode.VALIDATION_ERROR
    finally:
        await server.close(grace=1)
    with pytest.raises(PlatformError) as gone:
        await bus.request(bus.catalog.subject("svc", "double"), Ping(n=1), timeout=1)
    assert gone.value.code == ErrorCode.SERVICE_UNAVAILABLE


async def test_start_request_is_on_the_wire_before_what_follows(bus: Bus, nats_url: str, prefix: str) -> None:
    """start_request has published when it returns: a message published right after it reaches a subscriber
    of both subjects after the request (a task left to call `request` would publish only later)."""
    server = await Bus.connect(nats_url, prefix=prefix, name="svc", instance="a")
    base = bus.catalog.subject("svc", "order")
    seen: list[str] = []
    try:

        async def on_msg(msg: Msg) -> None:  # one subscription: messages are handled in arrival order
            seen.append(msg.subject.rpartition(".")[2])
            if msg.reply:
                await msg.respond(b'{"n": 7, "who": "raw"}')

        await server.nc.subscribe(base + ".>", cb=on_msg)
        await server.nc.flush()
        task = await bus.start_request(base + ".request", Ping(n=7), response_model=Pong)
        await bus.nc.publish(base + ".after", b"{}")
        assert (await task).who == "raw"
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert seen == ["request", "after"]
    finally:
        await server.close(grace=1)


def _raw_subscriber(nats_url: str, subject: str) -> socket.socket:
    """A blocking NATS connection (plain protocol) subscribed to `subject`: it reads while the event loop
    stays blocked, so it sees only what has really been written to the server."""
    url = urlparse(server_urls(nats_url)[0])
    raw = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=2)
    raw.recv(4096)  # INFO
    raw.sendall(f'CONNECT {{"verbose":false}}\r\nSUB {subject} 1\r\nPING\r\n'.encode())
    got = b""
    while b"PONG" not in got:
        got += raw.recv(4096)
    return raw


def _read_for(raw: socket.socket, seconds: float) -> bytes:
    raw.settimeout(seconds)
    try:
        return raw.recv(4096)
    except TimeoutError:
        return b""


async def test_send_now_writes_without_waiting_for_the_flusher(bus: Bus, nats_url: str, prefix: str) -> None:
    subject = bus.catalog.subject("svc", "now")
    raw = _raw_subscriber(nats_url, subject)
    try:
        await bus.nc.publish(subject, b"first")  # queued for nats-py's flusher task, which cannot run:
        assert _read_for(raw, 0.3) == b""  # the loop is blocked in this test from here on
        send_now(bus.nc)
        got = _read_for(raw, 2)
        assert got.startswith(f"MSG {subject} 1 5\r\nfirst".encode())
        send_now(bus.nc)  # nothing queued: a no-op
        await bus.nc.flush()  # and the flusher finds nothing left to send twice
        assert _read_for(raw, 0.3) in (b"", b"PING\r\n")
    finally:
        raw.close()


async def test_handlers_are_bounded_and_the_rest_wait_their_turn(bus: Bus, nats_url: str, prefix: str) -> None:
    name = f"bounded-{uuid.uuid4().hex[:8]}"  # its own service name: $SRV.STATS.<name> answers only here
    server = await Bus.connect(nats_url, prefix=prefix, name=name, instance="a", handler_concurrency=2)
    running, most = 0, 0
    try:

        async def handle(req: Ping, ctx: RequestContext) -> Pong:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1
            return Pong(n=req.n, who="a")

        subject = bus.catalog.subject("svc", "bounded")
        await server.serve(subject, handle, Ping)
        replies = await asyncio.gather(*(bus.request(subject, Ping(n=i), response_model=Pong) for i in range(7)))
        assert sorted(r.n for r in replies) == list(range(7))
        assert most == 2
        stats = await bus.nc.request(f"$SRV.STATS.{name}", b"", timeout=2)
        assert json.loads(stats.data)["endpoints"][0]["num_requests"] == 7
    finally:
        await server.close(grace=1)


async def test_slow_handler_does_not_block_others(bus: Bus, nats_url: str, prefix: str) -> None:
    server = await Bus.connect(nats_url, prefix=prefix, name="svc", instance="a")
    try:

        async def handle(req: Ping, ctx: RequestContext) -> Pong:
            await asyncio.sleep(0.5 if req.n == 0 else 0)
            return Pong(n=req.n, who="a")

        subject = bus.catalog.subject("svc", "slow")
        await server.serve(subject, handle, Ping)
        slow = asyncio.create_task(bus.request(subject, Ping(n=0), response_model=Pong))
        await asyncio.sleep(0.05)
        fast = await asyncio.wait_for(bus.request(subject, Ping(n=1), response_model=Pong), 0.3)
        assert fast.n == 1 and not slow.done()
        assert (await slow).n == 0
    finally:
        await server.close(grace=1)


async def test_duplicate_msg_id_is_dropped(bus: Bus) -> None:
    await bus.ensure_streams(["USAGE"])
    rec = UsageRecord(request_id="r1", provider="p", model="m", input_tokens=3)
    s1 = await bus.publish_event(bus.catalog.usage_record, rec, msg_id="r1")
    s2 = await bus.publish_event(bus.catalog.usage_record, rec, msg_id="r1")
    assert s1 == s2
    info = await bus.js.stream_info(bus.catalog.stream_name("USAGE"))
    assert info.state.messages == 1


async def test_ensure_stream_is_idempotent(bus: Bus) -> None:
    await bus.ensure_streams()
    await bus.ensure_streams()
    for spec in bus.catalog.streams:
        info = await bus.js.stream_info(spec.name)
        assert info.config.subjects == list(spec.subjects)


async def test_consumer_ack_retry_reject(bus: Bus) -> None:
    await bus.ensure_streams(["USAGE"])
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(d: Delivery) -> None:
        rid = d.payload.request_id
        seen.append((rid, d.num_delivered))
        if rid == "retry" and d.num_delivered == 1:
            raise Retry("again", delay=0.1)
        if rid == "bad":
            raise Reject("never")
        if rid == "retry":
            done.set()

    consumer = await bus.consume(bus.catalog.stream_name("USAGE"), "c1", handler, concurrency=4)
    for rid in ("ok", "retry", "bad"):
        await bus.publish_event(bus.catalog.usage_record, UsageRecord(request_id=rid, provider="p", model="m"))
    await asyncio.wait_for(done.wait(), 10)
    await consumer.stop(grace=2)
    assert ("retry", 2) in seen
    assert [s for s in seen if s[0] == "bad"] == [("bad", 1)]
    assert [s for s in seen if s[0] == "ok"] == [("ok", 1)]


async def test_a_long_handler_keeps_its_message_from_redelivery(bus: Bus) -> None:
    """A handler running for several ack_waits is kept alive (in_progress): delivered once, acked once."""
    await bus.ensure_streams(["USAGE"])
    seen: list[tuple[str, int]] = []

    async def handler(d: Delivery) -> None:
        seen.append((d.payload.request_id, d.num_delivered))
        await asyncio.sleep(2.5 if d.payload.request_id.startswith("slow") else 0)

    consumer = await bus.consume(bus.catalog.stream_name("USAGE"), "long", handler, concurrency=4, ack_wait=0.6)
    for rid in ("slow-1", "fast", "slow-2"):
        await bus.publish_event(bus.catalog.usage_record, UsageRecord(request_id=rid, provider="p", model="m"))
    for _ in range(200):
        if consumer.processed == 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a redelivery would show up here
    await consumer.stop(grace=2)
    assert sorted(seen) == [("fast", 1), ("slow-1", 1), ("slow-2", 1)]
    assert not consumer.progress and consumer.progress_clock is None


async def test_endpoints_are_discoverable_with_the_nats_services_protocol(bus: Bus, nats_url: str, prefix: str) -> None:
    server = await Bus.connect(nats_url, prefix=prefix, name=f"svc-{prefix}", instance="a")
    try:

        async def handle(req: Ping, ctx: RequestContext) -> Pong:
            return Pong(n=req.n, who="a")

        subject = bus.catalog.subject("svc", "discover")
        await server.serve(subject, handle, Ping, name="discover")
        await bus.request(subject, Ping(n=1), response_model=Pong)
        info = json.loads((await bus.nc.request(f"$SRV.INFO.svc-{prefix}", b"", timeout=2)).data)
        assert [e["subject"] for e in info["endpoints"]] == [subject]
        stats = json.loads((await bus.nc.request(f"$SRV.STATS.svc-{prefix}", b"", timeout=2)).data)
        assert stats["endpoints"][0]["num_requests"] == 1
    finally:
        await server.close(grace=1)


async def test_a_durable_consumer_takes_a_changed_ack_wait(bus: Bus) -> None:
    """Copies started with a shorter ack wait apply it to the durable consumer an older copy created
    (otherwise a dead copy's message would still wait out the old, longer one)."""
    await bus.ensure_streams(["USAGE"])
    stream = bus.catalog.stream_name("USAGE")

    async def handler(d: Delivery) -> None:
        return None

    first = await bus.consume(stream, "shared-wait", handler, ack_wait=30)
    await first.stop(grace=1)
    second = await bus.consume(stream, "shared-wait", handler, ack_wait=4, progress_every=1)
    try:
        info = await bus.js.consumer_info(stream, "shared-wait")
        assert info.config.ack_wait == 4
        assert second.progress.every_s == 1
    finally:
        await second.stop(grace=1)


async def test_consumer_at_full_concurrency_keeps_the_loop_responsive(bus: Bus) -> None:
    """With every handler slot busy, the consumer must wait, not spin: other work on the loop goes on."""
    await bus.ensure_streams(["USAGE"])
    release = asyncio.Event()
    started: list[str] = []

    async def handler(d: Delivery) -> None:
        started.append(d.payload.request_id)
        await release.wait()

    consumer = await bus.consume(bus.catalog.stream_name("USAGE"), "busy", handler, concurrency=2)
    for i in range(4):
        await bus.publish_event(bus.catalog.usage_record, UsageRecord(request_id=f"b{i}", provider="p", model="m"))
    for _ in range(100):
        if len(started) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(started) == 2
    # the event loop is not starved while the consumer is full
    t0 = asyncio.get_running_loop().time()
    await asyncio.sleep(0.05)
    assert asyncio.get_running_loop().time() - t0 < 0.5
    release.set()
    for _ in range(200):
        if len(started) == 4 and consumer.processed == 4:
            break
        await asyncio.sleep(0.02)
    assert sorted(started) == ["b0", "b1", "b2", "b3"] and consumer.processed == 4
    await consumer.stop(grace=2)
