"""The dialogue database's rows as typed values: the store returns these, never raw asyncpg records.

JSON columns arrive parsed (`loads`); timestamps are timezone-aware datetimes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def loads(value: Any) -> Any:
    """A JSON column as Python (a step's context holds every message so far: orjson, ~3x the stdlib)."""
    if value is None or not isinstance(value, str):
        return value
    return orjson.loads(value)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _pick(cls: type[T], r: Mapping[str, Any], json_columns: tuple[str, ...] = ()) -> T:
    """A row type's fields taken by name from a record (extra columns are ignored)."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]  # dataclasses only
    values = {name: r[name] for name in names}
    for name in json_columns:
        values[name] = loads(values[name])
    return cls(**values)


@dataclass(frozen=True, slots=True)
class DiscussionRow:
    id: str
    user_id: str
    key_id: str | None
    topic: str
    status: str
    personas: list[dict[str, Any]]
    current_round: int
    max_rounds: int
    auto_mode: bool
    token_count: int
    token_limit: int
    resolution: dict[str, Any] | None
    current_job: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> DiscussionRow:
        return _pick(cls, r, ("personas", "resolution", "current_job", "error"))


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    persona: str
    content: str
    round: int
    turn: int
    position: int
    provider: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    created_at: datetime

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> MessageRow:
        return _pick(cls, r)


@dataclass(frozen=True, slots=True)
class RoundRow:
    number: int
    token_count: int
    completed_at: datetime

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> RoundRow:
        return _pick(cls, r)


@dataclass(frozen=True, slots=True)
class SummaryRow:
    id: str
    round: int
    content: str
    tokens_before: int
    tokens_after: int
    reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> SummaryRow:
        return _pick(cls, r)


@dataclass(frozen=True, slots=True)
class QuestionSetRow:
    id: str
    round: int
    questions: list[dict[str, Any]]
    reason: str | None
    fallback: bool
    answers: dict[str, list[str]] | None
    answered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> QuestionSetRow:
        return _pick(cls, r, ("questions", "answers"))


@dataclass(frozen=True, slots=True)
class DiscussionDetail:
    """A discussion with its children, in order: what a full view shows."""

    discussion: DiscussionRow
    messages: list[MessageRow]
    rounds: list[RoundRow]
    summaries: list[SummaryRow]
    question_sets: list[QuestionSetRow]

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> DiscussionDetail:
        return cls(
            discussion=DiscussionRow.of(r),
            messages=[MessageRow.of(m) for m in r["v_messages"] or ()],
            rounds=[RoundRow.of(x) for x in r["v_rounds"] or ()],
            summaries=[SummaryRow.of(s) for s in r["v_summaries"] or ()],
            question_sets=[QuestionSetRow.of(q) for q in r["v_questions"] or ()],
        )


@dataclass(frozen=True, slots=True)
class StepRow:
    """What a step reads in one round trip: its discussion, whether the step was already processed (and the
    job it queued then), and the prompt context as stored (JSON: messages, latest summary, files)."""

    discussion: DiscussionRow
    step_done: bool
    step_next_job: dict[str, Any] | None
    ctx_messages: list[dict[str, Any]]
    ctx_summary: dict[str, Any] | None
    ctx_files: list[dict[str, Any]]
    ctx_question_rounds: list[int]

    @classmethod
    def of(cls, r: Mapping[str, Any]) -> StepRow:
        return cls(
            discussion=DiscussionRow.of(r),
            step_done=r["step_done"],
            step_next_job=loads(r["step_next_job"]),
            ctx_messages=loads(r["ctx_messages"]),
            ctx_summary=loads(r["ctx_summary"]),
            ctx_files=loads(r["ctx_files"]),
            ctx_question_rounds=list(r["ctx_question_rounds"]),
        )
