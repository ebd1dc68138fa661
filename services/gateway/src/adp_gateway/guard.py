"""uvicorn's HTTP/1.1 protocol with two guards against slow and piled-up connections: the request line
and headers must arrive within a deadline (uvicorn itself waits for them forever), and each client
address may hold only so many connections at once (more are closed as they open)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ConnectionGuard:
    """The shared state of one server's connections: open connections per client address."""

    def __init__(self, header_timeout_s: float, max_per_client: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_per_client = max_per_client
        self.open: Counter[str] = Counter()
        self.refused = 0

    def admit(self, client: str) -> bool:
        if self.open[client] >= self.max_per_client:
            self.refused += 1
            return False
        self.open[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]

    def protocol(self) -> type[HttpToolsProtocol]:
        """uvicorn's httptools protocol (the C parser: every SSE write and request of the gateway goes
        through it) with the two guards."""
        guard = self

        class GuardedHttpToolsProtocol(HttpToolsProtocol):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._guard_client: str | None = None
                self._header_timer: asyncio.TimerHandle | None = None

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn narrows it
                super().connection_made(transport)
                client = self.client[0] if self.client else "unknown"
                if not guard.admit(client):
                    transport.abort()
                    return
                self._guard_client = client
                self._arm_header_timer()

            def connection_lost(self, exc: Exception | None) -> None:
                self._leave()
                super().connection_lost(exc)

            def on_message_begin(self) -> None:
                super().on_message_begin()
                if self._guard_client is not None and self._header_timer is None:
                    self._arm_header_timer()  # the next request on a kept-alive connection started

            def on_headers_complete(self) -> None:
                self._cancel_header_timer()
                super().on_headers_complete()

            def handle_websocket_upgrade(self) -> None:
                self._leave()  # the connection now belongs to the WebSocket protocol
                super().handle_websocket_upgrade()

            def _leave(self) -> None:
                self._cancel_header_timer()
                if self._guard_client is not None:
                    guard.release(self._guard_client)
                    self._guard_client = None

            def _arm_header_timer(self) -> None:
                self._cancel_header_timer()
                self._header_timer = self.loop.call_later(guard.header_timeout_s, self._headers_too_slow)

            def _cancel_header_timer(self) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                    self._header_timer = None

            def _headers_too_slow(self) -> None:
                self._header_timer = None
                if not self.transport.is_closing():
                    self.transport.close()

        return GuardedHttpToolsProtocol
