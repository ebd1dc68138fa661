"""The live sessions of one gateway copy (SSE streams, Socket.IO connections), by user and API key, so that
revoking a key or disabling a user can end them at once on every copy (`GatewayContext.end_sessions`)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("adp.gateway.sessions")

Closer = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True)
class Session:
    kind: str  # "sse" or "socketio"
    user_id: str
    key_id: str | None
    close: Closer


def matches(session: Session, user_id: str | None, key_id: str | None) -> bool:
    """Whether an end request for (user_id, key_id) covers the session; a request naming neither covers none."""
    if user_id is None and key_id is None:
        return False
    if user_id is not None and session.user_id != user_id:
        return False
    return key_id is None or session.key_id == key_id


class LiveSessions:
    def __init__(self) -> None:
        self._open: dict[int, Session] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: Session) -> int:
        handle = next(self._ids)
        self._open[handle] = session
        return handle

    def remove(self, handle: int) -> None:
        self._open.pop(handle, None)

    def count(self, kind: str, user_id: str) -> int:
        return sum(1 for s in self._open.values() if s.kind == kind and s.user_id == user_id)

    async def end(self, user_id: str | None = None, key_id: str | None = None) -> int:
        """Close every matching session (each closer is called once; a failing one is logged); returns how many."""
        ended = [(h, s) for h, s in self._open.items() if matches(s, user_id, key_id)]
        for handle, session in ended:
            self._open.pop(handle, None)
            try:
                result = session.close()
                if result is not None:
                    await result
            except Exception:
                log.exception("closing a %s session of %s failed", session.kind, session.user_id)
        if ended:
            log.info("ended %d live sessions", len(ended), extra={"user_id": user_id, "key_id": key_id})
        return len(ended)
