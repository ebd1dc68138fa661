"""JetStream key-value buckets, named through the catalog and created on first use with the bus's replicas.
Every bucket of the platform comes from here; `KVWatch` follows a bucket's entries (a local copy kept current)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.errors import APIError, BadRequestError, KeyNotFoundError
from nats.js.kv import KeyValue

from adp_common.bus.connection import BusConnection
from adp_common.bus.jetstream import answered, read_at_start
from adp_common.bus.replicas import raise_if_replicas_unavailable

log = logging.getLogger("adp.bus")


class KeyValueBuckets(BusConnection):
    async def kv(self, base: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """The KV bucket `base` (prefixed), created on first use with the bus's replicas; an existing bucket
        with fewer replicas is raised to them."""
        name = self.catalog.bucket(base)
        if name not in self._kv:
            kv = await self._ensure_bucket(name, history, ttl)
            # A replicated bucket just created (or whose leader is being elected) answers reads only once it
            # has a leader; a service must not start and then fail its first read.
            await read_at_start(lambda: _read_missing_key(kv), f"bucket {name}")
            self._kv[name] = kv
        return self._kv[name]

    async def _ensure_bucket(self, name: str, history: int, ttl: float | None) -> KeyValue:
        try:
            return await answered(
                lambda: self.js.create_key_value(bucket=name, history=history, ttl=ttl, replicas=self.replicas),
                f"bucket {name}",
            )
        except APIError as err:
            raise_if_replicas_unavailable(err, name, self.replicas)
            if not isinstance(err, BadRequestError):
                raise
        # It exists with another config (another service's history or TTL, or replicas an operator changed),
        # or another copy created it at the same moment: use it, with at least our replicas.
        kv = await read_at_start(lambda: self.js.key_value(name), f"bucket {name}")
        current = await read_at_start(lambda: self.js.stream_info(kv._stream), f"bucket {name}")
        have = current.config.num_replicas or 1
        if have < self.replicas:
            log.info("bucket %s: replicas raised from %d to %d", name, have, self.replicas)
            try:
                await self.js.update_stream(current.config.evolve(num_replicas=self.replicas))
            except APIError as err:
                raise_if_replicas_unavailable(err, name, self.replicas)
                raise
        return kv


async def _read_missing_key(kv: KeyValue) -> None:
    """One read the bucket's leader must answer (`not found` is an answer)."""
    with contextlib.suppress(KeyNotFoundError):
        await kv.get("readiness-probe")


class KVWatch:
    """Follows every entry of a KV bucket from its current content on: `on_put(key, value, revision)` for
    each value written, `on_delete(key)` for each delete or purge. `synced` is set once the content present
    at start has been read (at once without a bucket). An entry a callback cannot take is logged and
    skipped; the watch goes on."""

    def __init__(
        self,
        kv: KeyValue | None,
        on_put: Callable[[str, bytes, int], None],
        on_delete: Callable[[str], None],
        *,
        what: str,
    ) -> None:
        self.kv = kv
        self.on_put = on_put
        self.on_delete = on_delete
        self.what = what
        self.synced = asyncio.Event()
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.kv is None:
            self.synced.set()
            return
        self._watcher = await answered(self.kv.watchall, f"{self.what} watch")
        self._task = asyncio.create_task(self._follow(self._watcher))

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the end of the content present at start
                self.synced.set()
                continue
            try:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.on_delete(entry.key)
                else:
                    self.on_put(entry.key, entry.value, entry.revision or 0)
            except Exception as err:
                log.warning("bad %s entry %s: %s", self.what, entry.key, err)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
