"""KV buckets and the watch that keeps a local copy of one current."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from adp_common.bus import Bus, KVWatch, wait_for


class Limit(BaseModel):
    usd: int


async def test_a_watch_follows_puts_and_deletes_and_skips_what_it_cannot_take(bus: Bus) -> None:
    kv = await bus.kv("watched")
    await kv.put("a", Limit(usd=1).model_dump_json().encode())
    seen: dict[str, Limit] = {}

    def put(key: str, value: bytes, revision: int) -> None:
        assert revision > 0
        seen[key] = Limit.model_validate_json(value)

    watch = KVWatch(kv, put, lambda key: seen.pop(key, None), what="limit")
    await watch.start()
    try:
        await asyncio.wait_for(watch.synced.wait(), 5)
        assert seen == {"a": Limit(usd=1)}  # what was there at start, read before `synced`
        await kv.put("b", b"not json")  # logged and skipped: the watch goes on
        await kv.put("c", Limit(usd=3).model_dump_json().encode())
        await kv.delete("a")

        async def caught_up() -> bool:
            return seen == {"c": Limit(usd=3)}

        assert await wait_for(caught_up, 5)
    finally:
        await watch.stop()
    await kv.put("d", Limit(usd=4).model_dump_json().encode())
    await asyncio.sleep(0.1)
    assert "d" not in seen  # stopped


async def test_without_a_bucket_a_watch_is_synced_at_once() -> None:
    watch = KVWatch(None, lambda *_: None, lambda _: None, what="nothing")
    await watch.start()
    assert watch.synced.is_set()
    await watch.stop()
