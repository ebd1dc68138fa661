"""Leader lease in the JetStream KV bucket `leases`: only the holder evaluates rules.

The value is `{"holder", "expires_at"}` (epoch seconds). Every write is a compare-and-set on the key's
revision (`create` when absent, `update(last=rev)` otherwise), so two copies can never both win the same
round. The holder renews every `ttl/3`; a candidate takes over only once `expires_at` has passed. The holder
considers itself leader only until `renewed_at + ttl * safety` (monotonic clock), so it stops acting before
anybody else may take over even when it cannot reach NATS. A graceful stop deletes the key (CAS) so a
follower takes over at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger("adp.alerts.lease")

Decision = Literal["create", "renew", "takeover", "follow"]


@dataclass(frozen=True)
class LeaseValue:
    holder: str
    expires_at: float

    def encode(self) -> bytes:
        return json.dumps({"holder": self.holder, "expires_at": self.expires_at}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> LeaseValue | None:
        if not data:
            return None
        try:
            raw = json.loads(data)
            return cls(str(raw["holder"]), float(raw["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None


def decide(current: LeaseValue | None, me: str, now: float) -> Decision:
    """Pure decision: what a candidate does given the lease it read."""
    if current is None:
        return "create"
    if current.holder == me:
        return "renew"
    if current.expires_at <= now:
        return "takeover"
    return "follow"


class LeaderLease:
    def __init__(
        self,
        kv: KeyValue,
        key: str,
        holder: str,
        *,
        ttl_s: float = 10.0,
        safety: float = 0.8,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.ttl_s = ttl_s
        self.safety = safety
        self.wall = wall
        self.mono = mono
        self.revision: int | None = None
        self._valid_until = 0.0
        self.holder_seen: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.revision is not None and self.mono() < self._valid_until

    async def step(self) -> bool:
        """One acquire/renew round; returns whether this copy is leader afterwards."""
        started = self.mono()
        try:
            entry = await self.kv.get(self.key)
            current, rev = LeaseValue.decode(entry.value), entry.revision
        except (KeyNotFoundError, KeyDeletedError):  # absent or deleted
            current, rev = None, None
        self.holder_seen = current.holder if current else None
        decision = decide(current, self.holder, self.wall())
        value = LeaseValue(self.holder, self.wall() + self.ttl_s).encode()
        was_leader = self.is_leader
        try:
            if decision == "follow":
                self.revision = None
            elif decision == "create" or rev is None:
                self.revision = await self.kv.create(self.key, value)
            else:
                self.revision = await self.kv.update(self.key, value, last=rev)
        except KeyWrongLastSequenceError:
            self.revision = None  # somebody else wrote first
        if self.revision is not None:
            self._valid_until = started + self.ttl_s * self.safety
            self.holder_seen = self.holder
        else:
            self._valid_until = 0.0
        if self.is_leader != was_leader:
            log.info(
                "alerts leadership %s (%s)",
                "acquired" if self.is_leader else "lost",
                decision,
                extra={"lease": self.key},
            )
        return self.is_leader

    async def release(self) -> None:
        if self.revision is None:
            return
        rev, self.revision, self._valid_until = self.revision, None, 0.0
        with contextlib.suppress(Exception):
            await self.kv.delete(self.key, last=rev)
