"""The benchmark's HTTP client for event streams: one keep-alive HTTP/1.1 connection as a bare asyncio protocol,
the response parsed by httptools and its SSE events handed to a callback inside `data_received`, stamped with
the time of the read that brought them.

The load benchmark holds 500 streams in one process that shares the two cores with what it measures. Through
aiohttp every read of a stream woke a task (the reader of `iter_any`) and went through its stream reader before
the event was even looked at; here a read costs one parser call and the callback, and an event is timed when
its bytes arrived rather than when the woken task got its turn of the event loop. The direct calls to the
provider use this client too, so both sides of every comparison are measured the same way. REST calls stay
on aiohttp.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

from adp_common.sse import SSEDecoder

# (perf_counter, wall clock, event name, data) -> True to stop reading (the connection is then closed)
OnEvent = Callable[[float, float, str, bytes], bool]


class SSEConnection(asyncio.Protocol):
    """One connection to one server; requests one after another (keep-alive), each answered by an SSE stream
    (status 200) or by a body that is returned whole (any other status)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future[None] | None = None
        self.on_event: OnEvent | None = None
        self.sse = SSEDecoder()
        self.status = 0
        self.body: list[bytes] = []
        self.stopped = False
        self.closed = False
        self.now = self.wall = 0.0

    @classmethod
    async def open(cls, base_url: str, timeout: float = 10.0) -> SSEConnection:
        u = urlsplit(base_url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(lambda: cls(f"{host}:{port}"), host, port), timeout)
        return conn

    @property
    def reusable(self) -> bool:
        return not self.closed and not self.stopped and self.parser.should_keep_alive()

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None, on_event: OnEvent
    ) -> tuple[int, bytes]:
        """Send one request and wait for its response to end (or for `on_event` to stop it): the status, and
        the body when it was not an event stream. Raises ConnectionError when the connection goes first."""
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        self.parser = httptools.HttpResponseParser(self)
        self.sse, self.status, self.body, self.on_event = SSEDecoder(), 0, [], on_event
        self.done = asyncio.get_running_loop().create_future()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", *(f"{k}: {v}" for k, v in headers.items())]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        await self.done
        return self.status, b"".join(self.body)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.now, self.wall = time.perf_counter(), time.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"bad HTTP response: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.status != 200:
            self.body.append(body)
            return
        if self.stopped or self.on_event is None:
            return
        for ev in self.sse.feed(body):
            if self.on_event(self.now, self.wall, ev.event, ev.data.encode()):
                self.stopped = True
                self._finish()
                self.close()
                return

    def on_message_complete(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _fail(self, err: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(err)


class ConnectionSlot:
    """A worker's connection for calls made one after another: reused while the server keeps it alive."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.base = f"{u.scheme}://{u.netloc}"
        self.path = u.path + (f"?{u.query}" if u.query else "")
        self.conn: SSEConnection | None = None

    async def get(self) -> SSEConnection:
        if self.conn is None or not self.conn.reusable:
            if self.conn is not None:
                self.conn.close()
            self.conn = await SSEConnection.open(self.base)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
