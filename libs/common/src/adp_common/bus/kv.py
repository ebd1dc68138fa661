"""JetStream key-value buckets, named through the catalog and created on first use with the bus's replicas.
Every bucket of the platform comes from here."""

from __future__ import annotations

import logging

from nats.js.errors import APIError, BadRequestError
from nats.js.kv import KeyValue

from adp_common.bus.connection import BusConnection
from adp_common.bus.replicas import raise_if_replicas_unavailable

log = logging.getLogger("adp.bus")


class KeyValueBuckets(BusConnection):
    async def kv(self, base: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """The KV bucket `base` (prefixed), created on first use with the bus's replicas; an existing bucket
        with fewer replicas is raised to them."""
        name = self.catalog.bucket(base)
        if name not in self._kv:
            self._kv[name] = await self._ensure_bucket(name, history, ttl)
        return self._kv[name]

    async def _ensure_bucket(self, name: str, history: int, ttl: float | None) -> KeyValue:
        try:
            return await self.js.create_key_value(bucket=name, history=history, ttl=ttl, replicas=self.replicas)
        except APIError as err:
            raise_if_replicas_unavailable(err, name, self.replicas)
            if not isinstance(err, BadRequestError):
                raise
        # It exists with another config (another service's history or TTL, or replicas an operator changed),
        # or another copy created it at the same moment: use it, with at least our replicas.
        kv = await self.js.key_value(name)
        current = await self.js.stream_info(kv._stream)
        have = current.config.num_replicas or 1
        if have < self.replicas:
            log.info("bucket %s: replicas raised from %d to %d", name, have, self.replicas)
            try:
                await self.js.update_stream(current.config.evolve(num_replicas=self.replicas))
            except APIError as err:
                raise_if_replicas_unavailable(err, name, self.replicas)
                raise
        return kv
