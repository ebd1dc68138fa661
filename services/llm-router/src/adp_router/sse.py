"""Incremental Server-Sent Events parser (pure): feed it lines, get events at each blank line."""

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
