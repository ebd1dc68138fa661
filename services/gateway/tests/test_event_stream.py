"""EventStream against real NATS: history then live chunks in order, heartbeats only when idle, a slow
client cut off with its resume point, and a prompt end on drain."""

from __future__ import annotations

import asyncio
import time
import uuid

from adp_common.bus import Bus
from adp_common.envelope import wrap
from adp_common.schemas.dialogue import DiscussionEvent
from adp_gateway.events import EventStream, Heartbeat, Overflow
from adp_testing.garbage import cyclic_garbage


def history(*seqs: int):
    async def read(after: int) -> list[DiscussionEvent]:
        return [
            DiscussionEvent(discussionId="d", seq=s, event="message-complete", data={"n": s}) for s in seqs if s > after
        ]

    return read


async def publish_chunks(bus: Bus, did: str, texts: list[str]) -> None:
    for text in texts:
        ev = DiscussionEvent(discussionId=did, seq=0, event="message-chunk", data={"text": text})
        await bus.nc.publish(bus.catalog.discussion_chunks(did), ev.model_dump_json().encode())
    await bus.nc.flush()


async def collect(stream: EventStream, n: int, timeout: float = 5.0) -> list[object]:
    out: list[object] = []

    async def run() -> None:
        async for item in stream.items():
            out.append(item)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_history_then_live_chunks_in_order(bus: Bus) -> None:
    did = uuid.uuid4().hex
    async with EventStream(bus, did, history(1, 2), last_seq=1) as stream:
        await stream.prepare()
        await publish_chunks(bus, did, ["a", "b", "c"])
        items = await collect(stream, 4)
    assert isinstance(items[0], DiscussionEvent) and items[0].seq == 2  # seq 1 was already seen
    assert [i.data["text"] for i in items[1:]] == ["a", "b", "c"]
    assert stream.last_seq == 2


async def test_heartbeat_only_when_idle(bus: Bus) -> None:
    did = uuid.uuid4().hex
    async with EventStream(bus, did, history(), heartbeat_s=0.2) as stream:
        t0 = time.perf_counter()
        (first,) = await collect(stream, 1)
        assert isinstance(first, Heartbeat)
        assert 0.15 < time.perf_counter() - t0 < 1.5

    async with EventStream(bus, did, history(), heartbeat_s=0.3) as stream:
        await stream.prepare()

        async def steady() -> None:
            for i in range(12):
                await publish_chunks(bus, did, [str(i)])
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(steady())
        items = await collect(stream, 12)
        await feeder
    assert not any(isinstance(i, Heartbeat) for i in items)  # a chunk every 50 ms: never idle for 0.3 s


async def test_slow_client_is_cut_off_with_its_resume_point(bus: Bus) -> None:
    did = uuid.uuid4().hex
    async with EventStream(bus, did, history(5), queue_size=3) as stream:
        await stream.prepare()
        await publish_chunks(bus, did, [str(i) for i in range(10)])
        await asyncio.sleep(0.2)  # the reader is not reading: the buffer fills
        items = await collect(stream, 3)
    assert isinstance(items[0], DiscussionEvent) and items[0].seq == 5  # history first
    assert isinstance(items[1], Overflow) and items[1].last_seq == 5
    assert len(items) == 2 or not isinstance(items[2], DiscussionEvent)


async def test_drain_ends_the_stream_promptly(bus: Bus) -> None:
    did = uuid.uuid4().hex
    stop = asyncio.Event()
    async with EventStream(bus, did, history(), heartbeat_s=30, stop=stop) as stream:

        async def read() -> list[object]:
            return [item async for item in stream.items()]

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        stop.set()
        assert await asyncio.wait_for(reader, 2) == []
        assert time.perf_counter() - t0 < 0.5


async def test_a_finished_stream_leaves_no_reference_cycles(bus: Bus) -> None:
    """A client's event stream (its subscription, buffer, handler and heartbeat clock) is freed by reference
    counting when it ends: the cyclic GC, which a loaded gateway runs rarely, finds nothing of it. The
    inline subscription and its handler, and the heartbeat closure and its timer, had referenced each
    other, so every closed stream stayed in memory until a full collection."""

    async def one_stream() -> None:
        did = uuid.uuid4().hex
        async with EventStream(bus, did, history(1, 2), last_seq=1) as stream:
            await stream.prepare()
            await publish_chunks(bus, did, ["a", "b", "c"])
            await collect(stream, 4)

    await one_stream()  # first-use work before counting
    with cyclic_garbage() as found:
        for _ in range(3):
            await one_stream()
    assert dict(found) == {}


async def test_heartbeat_follows_the_last_item_by_one_period(bus: Bus) -> None:
    """A client hears something at least every heartbeat period: the heartbeat comes one period after the
    last item sent, not at the end of the clock period that follows it."""
    did = uuid.uuid4().hex
    period = 0.6
    async with EventStream(bus, did, history(), heartbeat_s=period) as stream:
        await stream.prepare()
        got: list[tuple[float, object]] = []

        async def read() -> None:
            async for item in stream.items():
                got.append((time.perf_counter(), item))
                if isinstance(item, Heartbeat):
                    return

        reader = asyncio.create_task(read())
        await asyncio.sleep(period * 0.3)
        await publish_chunks(bus, did, ["x"])
        await asyncio.wait_for(reader, 5)
    (t_chunk, chunk), (t_beat, beat) = got
    assert isinstance(chunk, DiscussionEvent) and isinstance(beat, Heartbeat)
    assert t_beat - t_chunk < period * 1.4, t_beat - t_chunk


async def test_a_terminal_event_ends_the_stream_live_and_in_replay(bus: Bus) -> None:
    did = uuid.uuid4().hex
    async with EventStream(bus, did, history(1), heartbeat_s=30) as stream:
        await stream.prepare()
        ended = DiscussionEvent(discussionId=did, seq=2, event="discussion-stopped", data={"status": "stopped"})

        async def read() -> list[object]:
            return [item async for item in stream.items()]

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.1)
        await bus.nc.publish(bus.catalog.discussion_events(did), wrap(ended).model_dump_json().encode())
        items = await asyncio.wait_for(reader, 5)
    assert [i.event for i in items] == ["message-complete", "discussion-stopped"]

    async def finished(after: int) -> list[DiscussionEvent]:
        return [
            DiscussionEvent(discussionId=did, seq=1, event="message-complete", data={}),
            DiscussionEvent(discussionId=did, seq=2, event="discussion-completed", data={"status": "completed"}),
        ]

    async with EventStream(bus, did, finished, heartbeat_s=30) as late:
        items = await asyncio.wait_for(collect_all(late), 5)
    assert [i.event for i in items] == ["message-complete", "discussion-completed"]


async def collect_all(stream: EventStream) -> list[object]:
    return [item async for item in stream.items()]


async def test_a_durable_event_the_subscription_missed_is_read_from_the_store(bus: Bus) -> None:
    """Core delivery is at most once (a connection moving to another server loses what was published
    meanwhile): a gap in the durable seq is filled from the store, in order, before the event after it."""
    did = uuid.uuid4().hex
    stored = [1]

    async def store(after: int) -> list[DiscussionEvent]:
        return [
            DiscussionEvent(discussionId=did, seq=s, event="message-complete", data={"n": s})
            for s in stored
            if s > after
        ]

    async with EventStream(bus, did, store, heartbeat_s=30) as stream:
        await stream.prepare()
        stored += [2, 3]  # 2 was published while the subscription could not hear it; only 3 arrives
        third = DiscussionEvent(discussionId=did, seq=3, event="message-complete", data={"n": 3})
        await bus.nc.publish(bus.catalog.discussion_events(did), wrap(third).model_dump_json().encode())
        items = await collect(stream, 3)
    assert [i.seq for i in items] == [1, 2, 3]
    assert stream.last_seq == 3
