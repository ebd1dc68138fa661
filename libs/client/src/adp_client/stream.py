"""Following a discussion's events: typed events from the SSE body, resumed by id after a drop."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from adp_client.calls import ApiError, error_of
from adp_common.retry import Backoff
from adp_common.schemas.dialogue import TERMINAL_EVENT_NAMES
from adp_common.schemas.events import ClientEvent, parse_client_event
from adp_common.sse import SSEDecoder

EVENTS_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}


RECONNECT = Backoff(initial_s=0.3, max_s=5.0)  # 0.3 s doubling, at most 5 s


def backoff_s(attempt: int) -> float:
    """Seconds before reconnection attempt `attempt` (1, 2, …)."""
    return RECONNECT.pause(attempt)


def refused(resp: httpx.Response) -> ApiError | None:
    """An answer that reconnecting will not change (4xx other than 408/429), as an error; else None."""
    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
        return error_of(resp)
    return None


@dataclass
class Follow:
    """One reader's position in a discussion's events: the last id seen (sent as Last-Event-ID on every
    connection) and whether the terminal event arrived (then nothing more will come)."""

    last_event_id: int = 0
    ended: bool = False
    reconnects: int = 0
    decoder: SSEDecoder = field(default_factory=SSEDecoder)

    def headers(self) -> dict[str, str]:
        self.decoder = SSEDecoder()  # a new connection starts a new body
        return {**EVENTS_HEADERS, "Last-Event-ID": str(self.last_event_id)}

    def feed(self, chunk: bytes) -> list[ClientEvent]:
        out: list[ClientEvent] = []
        for raw in self.decoder.feed(chunk):
            ev = parse_client_event(raw.event, raw.data, raw.id)
            if ev is None or self.ended:
                continue
            if ev.id is not None:
                if ev.id <= self.last_event_id:
                    continue  # already delivered before a reconnect
                self.last_event_id = ev.id
            out.append(ev)
            if ev.event in TERMINAL_EVENT_NAMES:
                self.ended = True
        return out
