"""What the fake provider is configured with and counts: faults to inject, timing, the default answer, call
statistics, and how it counts tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

Protocol = Literal["openai", "anthropic"]

DEFAULT_TEXT = (
    "The fake provider answers every request with this same short paragraph, split into word tokens, "
    "so tests and benchmarks can check exactly what arrived."
)


class Fault(BaseModel):
    """One fault; the first matching fault in the list applies to a call. `times`: how many calls it
    applies to (None = until cleared)."""

    status: int | None = Field(default=None, description="answer this HTTP status instead")
    body: str | None = Field(default=None, description="body sent with `status`")
    retry_after: float | None = Field(default=None, description="Retry-After header (seconds)")
    delay_s: float = Field(default=0.0, ge=0, description="wait before the first byte (headers)")
    stall_after: int | None = Field(default=None, ge=0, description="stream this many tokens, then stall")
    stall_s: float = Field(default=30.0, ge=0)
    drop_after: int | None = Field(default=None, ge=0, description="stream this many tokens, then drop the connection")
    malformed_sse: bool = Field(default=False, description="send a data line that is not JSON")
    wrong_json: bool = Field(default=False, description="valid JSON of the wrong shape")
    no_usage: bool = Field(default=False, description="report no usage figures")
    protocol: Protocol | None = Field(default=None, description="only calls of this protocol")
    model: str | None = Field(default=None, description="only calls for this model")
    times: int | None = Field(default=None, ge=1)


class Timing(BaseModel):
    ttft_s: float = Field(default=0.0, ge=0, description="delay before the first token")
    token_interval_s: float = Field(default=0.0, ge=0, description="delay between tokens")
    text: str = DEFAULT_TEXT


@dataclass
class Stats:
    calls: int = 0
    calls_by_protocol: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)  # one per TCP connection a client opened

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "calls_by_protocol": dict(self.calls_by_protocol),
            "completed": self.completed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "connections": len(self.client_ports),
        }


class Drop(Exception):
    """Raised inside a streaming body to break the connection without ending the response."""


def split_tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def prompt_tokens(body: dict[str, Any]) -> int:
    msgs = body.get("messages") or []
    chars = sum(len(str(m.get("content", ""))) for m in msgs if isinstance(m, dict)) + len(str(body.get("system", "")))
    return max(1, chars // 4)
