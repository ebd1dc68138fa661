"""Circuit breaker per provider: a pure state machine over `BreakerState`, and a board that keeps the
states in the shared NATS KV bucket (CAS on the entry revision) so every router copy sees the same state.

closed --(N failures within window)--> open --(cooldown elapsed, next request)--> half_open
half_open --(M successes)--> closed;  half_open --(any failure)--> open
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from adp_common.bus import KVWatch
from adp_common.schemas.llm import BreakerState, BreakerStateName

log = logging.getLogger("adp.router.breaker")


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0
    success_threshold: int = 2


def admit(state: BreakerState, now: float, p: BreakerPolicy) -> tuple[bool, BreakerState | None]:
    """May a request go to this provider? Returns (allowed, new state to store or None)."""
    if state.state == "closed" or state.state == "half_open":
        return True, None
    if state.opened_at is not None and now - state.opened_at >= p.cooldown_s:
        return True, state.model_copy(update={"state": "half_open", "successes_in_half_open": 0, "updated_at": now})
    return False, None


def on_success(state: BreakerState, now: float, p: BreakerPolicy) -> BreakerState | None:
    """New state after a success, or None when nothing changes (the common case: no write)."""
    if state.state == "half_open":
        n = state.successes_in_half_open + 1
        if n >= p.success_threshold:
            return BreakerState(provider=state.provider, state="closed", updated_at=now)
        return state.model_copy(update={"successes_in_half_open": n, "updated_at": now})
    if state.state == "open" and state.opened_at is not None and now - state.opened_at >= p.cooldown_s:
        # a success raced with the half-open transition: count it as the first half-open success
        return on_success(state.model_copy(update={"state": "half_open", "successes_in_half_open": 0}), now, p)
    return None


def on_failure(state: BreakerState, now: float, p: BreakerPolicy) -> BreakerState:
    if state.state == "half_open":
        return state.model_copy(
            update={
                "state": "open",
                "opened_at": now,
                "failures": [now],
                "successes_in_half_open": 0,
                "updated_at": now,
            }
        )
    recent = [t for t in state.failures if now - t < p.window_s]
    recent.append(now)
    recent = recent[-max(p.failure_threshold, 1) * 2 :]
    if state.state == "open":
        return state.model_copy(update={"failures": recent, "updated_at": now})
    if len(recent) >= p.failure_threshold:
        return state.model_copy(update={"state": "open", "opened_at": now, "failures": recent, "updated_at": now})
    return state.model_copy(update={"failures": recent, "updated_at": now})


ChangeCallback = Callable[[str, BreakerStateName, BreakerStateName], Awaitable[None]]


class BreakerBoard:
    """Breaker states of all providers, cached locally from a KV watch; writes go through CAS."""

    def __init__(
        self,
        kv: KeyValue | None,
        policy: BreakerPolicy,
        on_change: ChangeCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.policy = policy
        self.on_change = on_change
        self.clock = clock
        self._cache: dict[str, tuple[BreakerState, int]] = {}
        self._watch = KVWatch(kv, self._put, self._delete, what="breaker")

    def state(self, provider: str) -> BreakerState:
        got = self._cache.get(provider)
        return got[0] if got else BreakerState(provider=provider)

    def _remember(self, st: BreakerState, rev: int) -> None:
        cur = self._cache.get(st.provider)
        if cur is None or rev >= cur[1]:
            self._cache[st.provider] = (st, rev)

    def _put(self, provider: str, value: bytes, revision: int) -> None:
        self._remember(BreakerState.model_validate_json(value), revision)

    def _delete(self, provider: str) -> None:
        self._cache.pop(provider, None)

    async def start(self) -> None:
        await self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    async def allow(self, provider: str) -> bool:
        st = self.state(provider)
        ok, new = admit(st, self.clock(), self.policy)
        if new is not None:
            await self._transition(provider, lambda s, now: admit(s, now, self.policy)[1])
            return admit(self.state(provider), self.clock(), self.policy)[0]
        return ok

    async def success(self, provider: str) -> None:
        if on_success(self.state(provider), self.clock(), self.policy) is None:
            return  # closed and healthy: no write on the hot path
        await self._transition(provider, lambda s, now: on_success(s, now, self.policy))

    async def failure(self, provider: str) -> None:
        await self._transition(provider, lambda s, now: on_failure(s, now, self.policy))

    async def _transition(self, provider: str, fn: Callable[[BreakerState, float], BreakerState | None]) -> None:
        """Apply `fn` to the shared state with compare-and-set, retrying on a concurrent update."""
        for attempt in range(8):
            cached = self._cache.get(provider)
            if attempt > 0 or cached is None:
                cached = await self._read(provider)
            st, rev = cached if cached else (BreakerState(provider=provider), 0)
            new = fn(st, self.clock())
            if new is None:
                return
            if self.kv is None:
                self._cache[provider] = (new, rev + 1)
                await self._changed(provider, st.state, new.state)
                return
            try:
                new_rev = await self.kv.update(provider, new.model_dump_json().encode(), last=rev)
            except KeyWrongLastSequenceError:
                continue
            except Exception as err:  # NATS trouble: keep a local view, try again next time
                log.warning("breaker update for %s failed: %s", provider, err)
                self._remember(new, rev)
                return
            self._remember(new, new_rev)
            await self._changed(provider, st.state, new.state)
            return
        log.warning("breaker update for %s lost the CAS race repeatedly", provider)

    async def _read(self, provider: str) -> tuple[BreakerState, int] | None:
        if self.kv is None:
            return self._cache.get(provider)
        try:
            entry = await self.kv.get(provider)
        except Exception:
            return None
        if entry.value is None or entry.revision is None:
            return None
        st = BreakerState.model_validate_json(entry.value)
        self._remember(st, entry.revision)
        return st, entry.revision

    async def _changed(self, provider: str, old: BreakerStateName, new: BreakerStateName) -> None:
        if old != new and self.on_change is not None:
            try:
                await self.on_change(provider, new, old)
            except Exception as err:
                log.warning("breaker change callback failed: %s", err)
