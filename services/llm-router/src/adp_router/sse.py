"""Server-Sent Events parsing (pure): `split_events` takes the complete events out of a streamed body's
bytes; `SSEParser` follows the line rules for whatever is not a plain one-line `data:` event."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


class SSEParser:
    """Follows the WHATWG rules that matter for LLM APIs: `event:`, multi-line `data:`, comments, and
    dispatch on an empty line. Lines come without their line terminator."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            ev = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event = ""
            self._data = []
            return ev
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        # id / retry / unknown fields are irrelevant here
        return None

    def flush(self) -> SSEEvent | None:
        """An event left without its terminating blank line when the stream ended."""
        return self.feed("") if self._data else None


def split_events(data: bytes) -> tuple[list[SSEEvent], bytes]:
    """The complete events in `data` (each ended by a blank line) and the bytes of the unfinished rest,
    to be put in front of the next read. The common shape — one `data: ...` line per event, as OpenAI-
    compatible APIs stream every token — is taken without going line by line (a read under load holds
    several tokens, and per-line parsing was most of the router's work per token); any other event
    (names, several data lines, comments) goes through `SSEParser`. CRLF line ends are accepted; the
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
            parser = SSEParser()
            for line in [*block.split("\n"), ""]:
                ev = parser.feed(line)
                if ev is not None:
                    events.append(ev)
    return events, data[cut + 2 :]
