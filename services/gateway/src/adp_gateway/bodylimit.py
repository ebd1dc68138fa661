"""Request-body rules of the gateway, applied while the body is read: the content type an endpoint takes,
the largest body (declared or chunked), and the time the whole body may take to arrive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Message, Receive

from adp_common.errors import HTTP_STATUS, ErrorCode

UPLOAD_PATHS = ("/api/files",)
JSON_PREFIXES = ("/api/", "/v1/")


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode
    message: str

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]


class BodyRefused(Exception):
    """Raised from `receive` inside the app; the middleware answers with the refusal instead."""


def check_headers(path: str, headers: dict[str, str], limit: int) -> Refusal | None:
    """What can be refused before reading a byte: a form on a JSON endpoint, a declared size over the limit."""
    is_form = headers.get("content-type", "").startswith("multipart/form-data")
    if is_form and path not in UPLOAD_PATHS and path.startswith(JSON_PREFIXES):
        return Refusal(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "this endpoint takes application/json, not a form")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_large(path, limit)
    return None


def too_large(path: str, limit: int) -> Refusal:
    code = ErrorCode.INVALID_FILE_SIZE if path in UPLOAD_PATHS else ErrorCode.PAYLOAD_TOO_LARGE
    return Refusal(code, f"request body larger than {limit} bytes")


def has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") not in ("", "0") or "chunked" in headers.get("transfer-encoding", "")


class BodyReader:
    """Wraps `receive`: counts the body against `limit`, bounds its arrival by `timeout_s`, and calls
    `on_complete` once the last part is in (the request then takes its in-flight slot)."""

    def __init__(
        self, receive: Receive, path: str, limit: int, timeout_s: float, body: bool, on_complete: Callable[[], None]
    ) -> None:
        self._receive = receive
        self.path = path
        self.limit = limit
        self.deadline = time.monotonic() + timeout_s
        self.done = not body
        self.received = 0
        self.refusal: Refusal | None = None
        self.on_complete = on_complete
        if self.done:
            on_complete()

    async def discard_rest(self) -> None:
        """Read and drop what the client still sends of a refused body (until its deadline), so that closing
        the connection after the answer does not reset it before the client has read the answer."""
        if self.done:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + max(0.0, self.deadline - time.monotonic())):
                while True:
                    message = await self._receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return

    async def __call__(self) -> Message:
        if self.done:  # after the body: waits for a disconnect (streams), no deadline
            return await self._receive()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, self.deadline - time.monotonic())):
                message = await self._receive()
        except TimeoutError:
            self.refusal = Refusal(ErrorCode.REQUEST_TIMEOUT, "request body not received in time")
            raise BodyRefused from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refusal = too_large(self.path, self.limit)
                raise BodyRefused
            if not message.get("more_body", False):
                self.done = True
                self.on_complete()
        return message
