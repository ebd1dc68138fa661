"""Fixed-window rate limits per (bucket, identity), shared through Redis, with an in-process fallback.

A request is checked against several counters at once (e.g. the overall bucket and the action's bucket,
each for the caller's key and for the client IP); it is refused when any counter is over its limit.
Redis is used with short timeouts; when it fails the limiter switches to its local counters for a while
(`redis_retry_s`), so limits are still enforced per copy while Redis is away.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("adp.gateway.ratelimit")

# Increments every key, sets its expiry on first use, returns the new counts (atomic per call).
_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local c = redis.call('INCR', key)
  if c == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  out[i] = c
end
return out
"""


@dataclass(frozen=True)
class Counter:
    bucket: str
    identity: str
    limit: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0
    bucket: str | None = None
    backend: str = "local"


def window_index(now: float, window_s: int) -> int:
    return int(now // window_s)


def retry_after(now: float, window_s: int) -> int:
    return max(1, math.ceil((window_index(now, window_s) + 1) * window_s - now))


class LocalCounters:
    """In-process fixed windows (used when Redis is unreachable)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[str, int] = {}
        self._window: int | None = None

    def incr(self, keys: list[str], window: int) -> list[int]:
        if self._window != window or len(self._counts) > self.max_keys:
            self._counts = {}
            self._window = window
        out = []
        for k in keys:
            self._counts[k] = self._counts.get(k, 0) + 1
            out.append(self._counts[k])
        return out


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None,
        *,
        namespace: str,
        window_s: int = 60,
        timeout_s: float = 0.25,
        redis_retry_s: float = 5.0,
    ) -> None:
        self.window_s = window_s
        self.namespace = namespace
        self.redis_retry_s = redis_retry_s
        self.local = LocalCounters()
        self._redis_down_until = 0.0
        self.redis: Redis | None = None
        if redis_url:
            self.redis = Redis.from_url(
                redis_url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._script = self.redis.register_script(_LUA)

    @property
    def redis_ok(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._redis_down_until

    async def check(self, counters: list[Counter], now: float | None = None) -> Decision:
        if not counters:
            return Decision(True)
        now = time.time() if now is None else now
        win = window_index(now, self.window_s)
        keys = [f"{self.namespace}:rl:{c.bucket}:{c.identity}:{win}" for c in counters]
        counts: list[int] | None = None
        backend = "local"
        if self.redis_ok:
            try:
                raw = await self._script(keys=keys, args=[self.window_s * 1000 + 1000])
                counts = [int(x) for x in raw]
                backend = "redis"
            except (RedisError, OSError, TimeoutError) as err:
                log.warning("rate limiter: Redis unavailable (%s); using local counters", type(err).__name__)
                self._redis_down_until = time.monotonic() + self.redis_retry_s
        if counts is None:
            counts = self.local.incr(keys, win)
        for c, n in zip(counters, counts, strict=True):
            if n > c.limit:
                return Decision(False, retry_after(now, self.window_s), c.bucket, backend)
        return Decision(True, backend=backend)

    async def ping(self) -> None:
        if self.redis is None:
            raise ConnectionError("no Redis configured")
        await self.redis.ping()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


class BlockedClients:
    """Client addresses refused until a moment (too many failed authentications), least recently blocked
    forgotten first when full."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()

    def block(self, client: str, seconds: float, now: float | None = None) -> None:
        self._until.pop(client, None)
        while len(self._until) >= self.max_entries:
            self._until.popitem(last=False)
        self._until[client] = (time.monotonic() if now is None else now) + seconds

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until the client may try again (0: not blocked)."""
        until = self._until.get(client)
        if until is None:
            return 0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            self._until.pop(client, None)
            return 0
        return max(1, math.ceil(left))
