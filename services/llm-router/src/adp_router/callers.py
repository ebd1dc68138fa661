"""Is the caller of a streamed call still there?

The keepalive the router sends a streaming caller every `router_keepalive_s` carries a reply subject, and the
caller answers it (adp_common.llm_client). The caller is gone when:
- the server answers "no responders" (its process died or it dropped its stream subscription), or
- it has not answered for `router_caller_deadline_s` (its connection hangs or its event loop is stuck).
Either way the call is an orphan: the router cancels the provider request and charges what streamed.

"No responders" is asked once more after `RECHECK_S` before it counts: a caller whose connection is moving to
another NATS server (a server restarted or lost) has no subscription for that moment, and comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from adp_common.bus import Bus
from adp_common.bus.wire import NO_RESPONDERS_STATUS, STATUS_HEADER

# A second "no responders" this long after the first makes the caller gone: longer than a client takes to move
# to another server and subscribe again (adp_common.bus.connection: reconnects every 0.5 s at most).
RECHECK_S = 1.0


def caller_gone(last_heard: float, now: float, deadline_s: float) -> bool:
    return now - last_heard > deadline_s


class CallerWatch:
    def __init__(self, bus: Bus, deadline_s: float, on_orphan: Callable[[str, str], None]) -> None:
        self.bus = bus
        self.deadline_s = deadline_s
        self.on_orphan = on_orphan  # (request id, why)
        self.inbox = ""
        self._tokens = itertools.count()
        self._calls: dict[str, tuple[str, float]] = {}  # token -> request id, when its caller last answered
        self._probes: dict[str, tuple[NATS, str, bytes]] = {}  # token -> how to ask again
        self._suspect: dict[str, float] = {}  # token -> when a question first found nobody listening
        self._asking: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.inbox = self.bus.nc.new_inbox()
        await self.bus.subscribe_inline(self.inbox + ".*", self._on_answer)

    def watch(self, request_id: str) -> str:
        token = str(next(self._tokens))
        self._calls[token] = (request_id, time.monotonic())
        return token

    def forget(self, token: str) -> None:
        self._calls.pop(token, None)
        self._probes.pop(token, None)
        self._suspect.pop(token, None)

    async def probe(self, token: str, nc: NATS, subject: str, keepalive: bytes) -> None:
        """Send the keepalive as a question, unless the caller already missed its deadline."""
        call = self._calls.get(token)
        if call is None:
            return
        if caller_gone(call[1], time.monotonic(), self.deadline_s):
            self._orphan(token, f"caller silent for over {self.deadline_s:g}s")
            return
        self._probes[token] = (nc, subject, keepalive)
        await nc.publish(subject, keepalive, reply=f"{self.inbox}.{token}")

    def _on_answer(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        call = self._calls.get(token)
        if call is None:
            return
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS and not msg.data:
            now = time.monotonic()
            first = self._suspect.get(token)
            if first is None:  # ask again once the caller has had time to subscribe again
                self._suspect[token] = now
                asyncio.get_running_loop().call_later(RECHECK_S, self._ask_again, token)
            elif now - first >= RECHECK_S * 0.9:
                self._orphan(token, "caller gone (nobody listens to its stream)")
        else:
            self._suspect.pop(token, None)
            self._calls[token] = (call[0], time.monotonic())

    def _ask_again(self, token: str) -> None:
        probe = self._probes.get(token)
        if probe is None or token not in self._suspect:
            return
        nc, subject, keepalive = probe
        task = asyncio.ensure_future(nc.publish(subject, keepalive, reply=f"{self.inbox}.{token}"))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    def _orphan(self, token: str, why: str) -> None:
        self._probes.pop(token, None)
        self._suspect.pop(token, None)
        call = self._calls.pop(token, None)
        if call is not None:
            self.on_orphan(call[0], why)
