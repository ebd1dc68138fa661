"""The bus across real OS processes: queue groups share load; an un-acked message survives its consumer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from adp_common.bus import Bus
from adp_common.schemas.llm import UsageRecord

WORKER = Path(__file__).with_name("bus_worker.py")


class Who(BaseModel):
    who: str


async def start(*args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE)
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
    assert line.strip() == b"ready", line
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_queue_group_shares_requests_across_processes(bus: Bus, nats_url: str, prefix: str) -> None:
    workers = [await start("serve", nats_url, prefix, name) for name in ("a", "b")]
    try:
        replies = await asyncio.gather(
            *(bus.request(bus.catalog.subject("worker", "who"), None, response_model=Who) for _ in range(60))
        )
        counts = Counter(r.who for r in replies)
        assert set(counts) == {"a", "b"}, counts
        assert sum(counts.values()) == 60
    finally:
        for w in workers:
            stop(w)


async def test_unacked_message_redelivered_after_consumer_killed(
    bus: Bus, nats_url: str, prefix: str, tmp_path: Path
) -> None:
    await bus.ensure_streams(["USAGE"])
    out = tmp_path / "seen.txt"
    first = await start("consume", nats_url, prefix, "one", str(out))
    second = None
    try:
        await bus.publish_event(bus.catalog.usage_record, UsageRecord(request_id="hang-one", provider="p", model="m"))
        for _ in range(100):
            if out.exists() and "one hang-one 1" in out.read_text():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("first consumer never got the message")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = await start("consume", nats_url, prefix, "two", str(out))
        for _ in range(200):
            if "two hang-one 2" in out.read_text():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"not redelivered: {out.read_text()!r}")
        # acked by the second consumer: nothing left pending
        info = await bus.js.consumer_info(bus.catalog.stream_name("USAGE"), "shared")
        for _ in range(50):
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)
            info = await bus.js.consumer_info(bus.catalog.stream_name("USAGE"), "shared")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        stop(first)
        if second is not None:
            stop(second)
