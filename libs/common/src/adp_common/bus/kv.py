"""JetStream key-value buckets, named through the catalog and created on first use."""

from __future__ import annotations

from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from adp_common.bus.connection import BusConnection


class KeyValueBuckets(BusConnection):
    async def kv(self, base: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """The KV bucket `base` (prefixed), created on first use."""
        name = self.catalog.bucket(base)
        if name not in self._kv:
            try:
                self._kv[name] = await self.js.key_value(name)
            except (NotFoundError, Exception):
                try:
                    self._kv[name] = await self.js.create_key_value(bucket=name, history=history, ttl=ttl)
                except BadRequestError:
                    # Another copy created it at the same moment (the server then answers "subjects
                    # overlap with an existing stream"): use theirs.
                    self._kv[name] = await self.js.key_value(name)
        return self._kv[name]
