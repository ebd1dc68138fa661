"""The terminal client's transport: the discussion's event stream read on a thread (resumed after a drop
by the client package), each event handed to the prompt loop as an `SseEvent`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from adp_client import ApiError, Client, ClientEvent

# ---- events ------------------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    """One discussion event as the terminal renders it: its name, its data (with discussionId) and its id."""

    event: str
    data: Any
    id: str | None = None

    @classmethod
    def of(cls, ev: ClientEvent) -> SseEvent:
        data = {**ev.data.model_dump(mode="json"), "discussionId": ev.discussionId}
        return cls(ev.event, data, None if ev.id is None else str(ev.id))


class EventReader(threading.Thread):
    """Reads a discussion's events (adp_client: resumed with Last-Event-ID after any drop, ended by the
    terminal event) into a queue."""

    def __init__(self, client: Client, discussion_id: str, out: queue.Queue[SseEvent | ApiError]) -> None:
        super().__init__(daemon=True, name="adp-sse")
        self.client = client
        self.discussion_id = discussion_id
        self.out = out
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            for ev in self.client.events(self.discussion_id):
                if self.stopping.is_set():
                    return
                self.out.put(SseEvent.of(ev))
        except ApiError as err:
            self.out.put(err)
