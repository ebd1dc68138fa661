"""Fault book: a local copy of the operator's injected faults (KV bucket `faults`), kept fresh by a KV watch,
so a simulated provider reads its fault without a round-trip."""

from __future__ import annotations

import logging

from nats.js.kv import KeyValue

from adp_common.bus import KVWatch
from adp_common.schemas.faults import ProviderFault

log = logging.getLogger("adp.router.faults")


class FaultBook:
    """The provider faults rehearsed right now, followed from the faults KV bucket."""

    def __init__(self, kv: KeyValue | None = None) -> None:
        self.kv = kv
        self.faults: dict[str, ProviderFault] = {}
        self._watch = KVWatch(kv, self._put, self._delete, what="fault")
        self.synced = self._watch.synced

    def get(self, provider: str) -> ProviderFault | None:
        return self.faults.get(provider)

    def _put(self, provider: str, value: bytes, _revision: int) -> None:
        fault = ProviderFault.model_validate_json(value)
        self.faults[provider] = fault
        log.warning("fault on provider %s: %s", provider, fault.model_dump_json(exclude_defaults=True))

    def _delete(self, provider: str) -> None:
        if self.faults.pop(provider, None) is not None:
            log.warning("fault on provider %s cleared", provider)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()
