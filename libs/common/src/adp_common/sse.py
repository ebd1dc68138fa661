"""Server-Sent Events (`text/event-stream`): encoding, and incremental parsing of a streamed body.

Everything on the platform that writes or reads SSE uses this module: the gateway's discussion events, the
router's provider adapters, the `adp` CLI, the typed client, the tests and the load bench.

`split_events` takes the complete events out of a body's bytes; `SSEParser` follows the WHATWG line rules
for whatever is not a plain one-line `data:` event; `SSEDecoder` keeps the unfinished rest between reads.
"""

from __future__ import annotations

from dataclasses import dataclass


# Not frozen: the router makes one per token of every stream, and a frozen dataclass's __init__ (one
# object.__setattr__ per field) costs three times as much.
@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None
    comment: str | None = None  # a comment-only block (a keep-alive), when comments are asked for


def encode(data: str, *, event: str | None = None, id: int | str | None = None) -> str:
    """One event: `id:` and `event:` when given, one `data:` line per line of `data`, then a blank line."""
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    if "\n" not in data and "\r" not in data:
        return f"{head}data: {data}\n\n"
    lines = data.splitlines() or [""]
    return head + "".join(f"data: {line}\n" for line in lines) + "\n"


def comment(text: str = "") -> str:
    """A comment block (`: text`): clients ignore it; it keeps idle connections open."""
    return f": {text}\n\n"


def retry(ms: int) -> str:
    """The reconnection delay a client should use."""
    return f"retry: {ms}\n\n"


class SSEParser:
    """Follows the WHATWG rules: `event:`, `id:`, multi-line `data:`, comments, dispatch on an empty line.
    Lines come without their line terminator. With `comments`, a block of comments alone is an event too."""

    __slots__ = ("_comment", "_comments", "_data", "_event", "_id")

    def __init__(self, *, comments: bool = False) -> None:
        self._comments = comments
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._comment: str | None = None

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                ev = SSEEvent("", "", None, self._comment) if self._comment is not None else None
                self._comment, self._id = None, None
                return ev
            ev = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id, self._comment = "", [], None, None
            return ev
        if line[0] == ":":
            if self._comments:
                self._comment = line[1:].strip()
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\x00" not in value:
            self._id = value
        # retry / unknown fields: the client's own reconnection policy applies
        return None

    def flush(self) -> SSEEvent | None:
        """An event left without its terminating blank line when the stream ended."""
        return self.feed("") if self._data else None


def split_events(data: bytes, *, comments: bool = False) -> tuple[list[SSEEvent], bytes]:
    """The complete events in `data` (each ended by a blank line) and the bytes of the unfinished rest,
    to be put in front of the next read. The common shape — one `data: ...` line per event, as OpenAI-
    compatible APIs stream every token — is taken without going line by line (a read under load holds
    several tokens, and per-line parsing was most of the router's work per token); any other event
    (names, ids, several data lines, comments) goes through `SSEParser`. CRLF line ends are accepted; the
    blank line is found on bytes, so a UTF-8 character is never cut."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    cut = data.rfind(b"\n\n")
    if cut < 0:
        return [], data
    events: list[SSEEvent] = []
    for block in data[:cut].decode("utf-8", errors="replace").split("\n\n"):
        if block.startswith("data: ") and "\n" not in block:
            events.append(SSEEvent("message", block[6:]))
        elif block:
            parser = SSEParser(comments=comments)
            for line in [*block.split("\n"), ""]:
                ev = parser.feed(line)
                if ev is not None:
                    events.append(ev)
    return events, data[cut + 2 :]


class SSEDecoder:
    """Incremental: feed the body's bytes as they arrive, get the events completed so far."""

    __slots__ = ("_comments", "_rest")

    def __init__(self, *, comments: bool = False) -> None:
        self._rest = b""
        self._comments = comments

    def feed(self, data: bytes) -> list[SSEEvent]:
        events, self._rest = split_events(self._rest + data if self._rest else data, comments=self._comments)
        return events
