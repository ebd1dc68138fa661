"""One provider call per logical call, whatever crashes.

A caller that makes the same call again after a crash (a dialogue step redelivered to another copy) sends
the same `CompletionRequest.call_key`. The router copy that first runs a logical call claims it in the
llm-results KV bucket ("running", with its instance id); when the call succeeds, its result replaces the
claim ("done") until the bucket's TTL drops it. The same logical call then:
- finds a result: it is replayed, the provider is not called;
- finds a claim of a live copy still running it: it waits for that call's result (joins it);
- finds a claim of a copy that is gone, or that no longer runs it: it takes the claim over and calls.
A failed or cancelled call releases its claim, so the caller's next attempt calls the provider afresh.
A request its client sends again only after seconds of silence (`CompletionRequest.claim_after_s`) is claimed
only once it has run part of that: a shorter call writes its result alone.

The bucket is an optimisation of cost, never a dependency: if it cannot be read or written the call simply
goes to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import CallOwnerQuery, CallOwnerReply, CompletionResult, StoredCall

log = logging.getLogger("adp.router.calls")

How = Literal["called", "replayed", "joined"]
Move = Literal["claim", "replay", "join", "take_over"]
WAIT_POLL_S = 0.2  # how often a joiner looks for the result of a call another copy runs
OWNER_RECHECK_S = 2.0  # how often a joiner asks that copy whether it still runs the call
OWNER_TIMEOUT_S = 2.0


def kv_key(call_key: str) -> str:
    """A valid KV key for any logical call id (ids hold characters keys may not)."""
    return hashlib.sha256(call_key.encode()).hexdigest()[:40]


def next_move(stored: StoredCall | None, *, mine: bool, owner_running: bool) -> Move:
    """What to do about a logical call given its entry: `mine` when this copy runs it now, `owner_running`
    when the claiming copy says it still runs it (asked only for another copy's claim)."""
    if stored is None:
        return "claim"
    if stored.state == "done" and stored.result is not None:
        return "replay"
    if mine or owner_running:
        return "join"
    return "take_over"


@dataclass
class Outcome:
    """What a joiner gets from the call it joined: its result, else the error to pass on (None: the call
    failed in a way the joiner's own attempt may not, e.g. its first caller vanished)."""

    result: CompletionResult | None = None
    error: PlatformError | None = None


class _ClaimLost(Exception):
    """A claim written alongside a fresh call found the call's entry there already."""


class _ClaimAlongside:
    """The claim of a fresh call, written alongside its provider request: at once, or only once the call has run
    `after` seconds (`future` stays None for a call that ends sooner). It cancels the task making the call when
    it finds the call's entry already there."""

    __slots__ = ("future", "lost", "task", "timer")

    def __init__(self, write: Callable[[], Awaitable[int | None]], after: float | None) -> None:
        self.task = asyncio.current_task()
        self.lost = False
        self.future: asyncio.Future[int | None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        if after is None:
            self._start(write)
        else:
            self.timer = asyncio.get_running_loop().call_later(after, self._start, write)

    def _start(self, write: Callable[[], Awaitable[int | None]]) -> None:
        self.timer = None
        self.future = asyncio.ensure_future(write())
        self.future.add_done_callback(self._on_claim)

    def _on_claim(self, f: asyncio.Future[int | None]) -> None:
        if not f.cancelled() and f.exception() is None and f.result() is None:
            self.lost = True
            if self.task is not None:
                self.task.cancel()

    def stop(self) -> None:
        """The call is over: nothing to cancel or claim (and no reference to the task, whose error holds the
        frame)."""
        self.task = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _uncancel() -> int:
    """Withdraw one cancellation of the running task; the number left. A function, so that the task is never
    a local of the frame its error's traceback holds."""
    task = asyncio.current_task()
    return task.uncancel() if task is not None else 1


class OnceCalls:
    def __init__(self, bus: Bus, kv: KeyValue, instance: str) -> None:
        self.bus = bus
        self.kv = kv
        self.instance = instance
        self.running: dict[str, asyncio.Future[Outcome]] = {}  # kv key -> outcome, calls this copy runs

    async def owner_query(self, q: CallOwnerQuery) -> CallOwnerReply:
        """The answer to another copy asking about a call this copy claimed."""
        return CallOwnerReply(running=kv_key(q.call_key) in self.running)

    async def run(
        self,
        call_key: str,
        call: Callable[[], Awaitable[CompletionResult]],
        deadline: float,
        passes_on: Callable[[PlatformError], bool],
        *,
        fresh: bool = False,
        claim_after_s: float | None = None,
    ) -> tuple[CompletionResult, How]:
        """The call's result and how it was obtained. `passes_on(err)`: whether a failure of the call is
        also the answer to a joiner (a stopped discussion) rather than something its own attempt may fix.
        `fresh`: the caller makes the call for the first time (`CompletionRequest.fresh`), to be claimed only
        once it has run `claim_after_s` when given."""
        key = kv_key(call_key)
        # Almost every call is new: claim it first, in the one round trip that stands between the request
        # and the provider (none for a fresh call: claimed while its request starts, or once it has run
        # `claim_after_s`); its entry is read only when the claim finds one.
        blind = True
        if fresh and key not in self.running:
            claim = _ClaimAlongside(lambda: self._write_claim(call_key, key, None), claim_after_s)
            made = await self._call(call_key, key, None, call, passes_on, claim)
            if made is not None:
                return made
            blind = False
        while time.monotonic() < deadline:
            local = self.running.get(key)
            if local is not None:
                outcome = await asyncio.shield(local)
                if outcome.result is not None:
                    return outcome.result, "joined"
                if outcome.error is not None:
                    raise outcome.error
                continue
            try:
                got = await (self._write_claim(call_key, key, None) if blind else self._decide(call_key, key, deadline))
            except Exception as err:  # the bucket is unreachable: call the provider
                log.warning("llm-results bucket unavailable for %s: %s", call_key, err)
                break
            if got is None:
                # an entry exists (first look), another copy claimed it first, or the call we waited for
                # ended without a result: look at the entry
                blind = False
                continue
            if isinstance(got, tuple):
                return got
            return await self._call_claimed(call_key, key, got, call, passes_on)
        return await self._call_claimed(call_key, key, None, call, passes_on)

    async def _decide(self, call_key: str, key: str, deadline: float) -> tuple[CompletionResult, How] | int | None:
        """One look at the call's entry: a result to return, the revision of this copy's claim (the call is
        ours to make), or None to look again."""
        stored, revision = await self._get(key)
        owner_running = False
        if stored is not None and stored.state == "running" and stored.owner != self.instance:
            owner_running = await self._owner_running(stored.owner, call_key)
        move = next_move(stored, mine=key in self.running, owner_running=owner_running)
        if move == "replay":
            assert stored is not None and stored.result is not None
            return stored.result, "replayed"
        if move == "join":
            assert stored is not None
            result = await self._wait_remote(call_key, key, stored.owner, deadline)
            return (result, "joined") if result is not None else None
        return await self._write_claim(call_key, key, None if move == "claim" else revision)

    async def _write_claim(self, call_key: str, key: str, revision: int | None) -> int | None:
        """Claim the call for this copy: a new entry (`revision` None) or over the entry at `revision`. The
        claim's revision, or None when the entry is not as expected (it exists, or another copy wrote it)."""
        claim = StoredCall(call_key=call_key, state="running", owner=self.instance).model_dump_json().encode()
        try:
            if revision is None:
                return await self.kv.create(key, claim)
            return await self.kv.update(key, claim, last=revision)
        except KeyWrongLastSequenceError:
            return None
        except Exception as err:
            if "wrong last sequence" in str(err).lower():
                return None
            raise

    async def _get(self, key: str) -> tuple[StoredCall | None, int]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:  # also a deleted or purged entry
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        try:
            return StoredCall.model_validate_json(entry.value), entry.revision or 0
        except ValueError:
            return None, entry.revision or 0

    async def _owner_running(self, owner: str, call_key: str) -> bool:
        """Whether the copy that claimed the call still runs it; a copy that is gone has no responder."""
        try:
            reply = await self.bus.request(
                self.bus.catalog.llm_call_owner(owner),
                CallOwnerQuery(call_key=call_key),
                timeout=OWNER_TIMEOUT_S,
                response_model=CallOwnerReply,
            )
        except PlatformError:
            return False
        return bool(reply.running)

    async def _wait_remote(self, call_key: str, key: str, owner: str, deadline: float) -> CompletionResult | None:
        """Wait for the result of the call another copy runs; None when it ended without one or the copy
        stopped running it."""
        checked = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(WAIT_POLL_S)
            stored, _ = await self._get(key)
            if stored is None or stored.owner != owner:
                return None
            if stored.state == "done":
                return stored.result
            if time.monotonic() - checked >= OWNER_RECHECK_S:
                checked = time.monotonic()
                if not await self._owner_running(owner, call_key):
                    return None
        raise PlatformError(ErrorCode.LLM_TIMEOUT, "the call this request joined did not finish in time")

    async def _call_claimed(
        self,
        call_key: str,
        key: str,
        revision: int | None,
        call: Callable[[], Awaitable[CompletionResult]],
        passes_on: Callable[[PlatformError], bool],
    ) -> tuple[CompletionResult, How]:
        made = await self._call(call_key, key, revision, call, passes_on, None)
        assert made is not None  # only a claim written alongside the call can be lost
        return made

    async def _call(
        self,
        call_key: str,
        key: str,
        revision: int | None,
        call: Callable[[], Awaitable[CompletionResult]],
        passes_on: Callable[[PlatformError], bool],
        claim: _ClaimAlongside | None,
    ) -> tuple[CompletionResult, How] | None:
        """Make the call (this copy holds the claim at `revision`, or none when the bucket is unusable; or the
        claim is written alongside: `claim`); its result is stored before the claim is let go, so no other copy
        ever sees neither. None when the claim written alongside found an entry: the call is cancelled (the
        caller's job was published again after a long stall), its entry is to be looked at."""
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.running[key] = outcome
        store = False  # a call too short to need its claim written still stores its result
        # The call runs in this task: a task of its own would cost a turn of the event loop before the provider
        # request leaves. A claim written alongside that finds the entry cancels it from here.
        try:
            try:
                result = await call()
            finally:
                if claim is not None:
                    claim.stop()
            if claim is not None:
                if claim.future is None:
                    store = True
                else:
                    revision = await self._settle(call_key, claim.future)
        except _ClaimLost:
            self._finish(key, outcome, Outcome())
            return None
        except asyncio.CancelledError:
            if claim is not None and claim.lost and _uncancel() == 0:
                self._finish(key, outcome, Outcome())
                return None
            await self._release(key, revision)
            self._finish(key, outcome, Outcome())
            raise
        except PlatformError as err:
            await self._release(key, revision)
            # a joiner gets a copy without this call's traceback (which holds this frame, and so the outcome)
            self._finish(key, outcome, Outcome(error=PlatformError(err.code, err.message) if passes_on(err) else None))
            raise
        except BaseException:
            await self._release(key, revision)
            self._finish(key, outcome, Outcome())
            raise
        if revision is not None or store:
            done = StoredCall(call_key=call_key, state="done", owner=self.instance, result=result)
            try:
                await self.kv.put(key, done.model_dump_json().encode())
            except Exception as err:
                log.warning("result of %s not stored: %s", call_key, err)
        self._finish(key, outcome, Outcome(result=result))
        return result, "called"

    async def _settle(self, call_key: str, claiming: asyncio.Future[int | None]) -> int | None:
        """The revision of a claim written alongside its call (None: the bucket is unusable, the call goes
        on unclaimed); _ClaimLost when the entry already existed."""
        try:
            revision = await claiming
        except Exception as err:
            log.warning("llm-results bucket unavailable for %s: %s", call_key, err)
            return None
        if revision is None:
            raise _ClaimLost
        return revision

    def _finish(self, key: str, future: asyncio.Future[Outcome], outcome: Outcome) -> None:
        if self.running.get(key) is future:
            del self.running[key]
        if not future.done():
            future.set_result(outcome)

    async def _release(self, key: str, revision: int | None) -> None:
        if revision is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(self.kv.delete(key))
