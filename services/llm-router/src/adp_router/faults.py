"""Fault book: a local copy of the operator's injected faults (KV bucket `faults`), kept fresh by a KV watch,
so a simulated provider reads its fault without a round-trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.kv import KeyValue

from adp_common.schemas.faults import ProviderFault

log = logging.getLogger("adp.router.faults")


class FaultBook:
    def __init__(self, kv: KeyValue | None = None) -> None:
        self.kv = kv
        self.faults: dict[str, ProviderFault] = {}
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    def get(self, provider: str) -> ProviderFault | None:
        return self.faults.get(provider)

    async def start(self) -> None:
        if self.kv is None:
            self.synced.set()
            return
        self._watcher = await self.kv.watchall()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        assert self._watcher is not None
        async for entry in self._watcher:
            if entry is None:
                self.synced.set()
                continue
            try:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    if self.faults.pop(entry.key, None) is not None:
                        log.warning("fault on provider %s cleared", entry.key)
                else:
                    fault = ProviderFault.model_validate_json(entry.value)
                    self.faults[entry.key] = fault
                    log.warning("fault on provider %s: %s", entry.key, fault.model_dump_json(exclude_defaults=True))
            except Exception as err:
                log.warning("bad fault entry %s: %s", entry.key, err)

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
