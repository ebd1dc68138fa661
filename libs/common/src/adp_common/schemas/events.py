"""The discussion events clients receive (SSE `event:` + `data:`, Socket.IO event name + payload): one
payload model per event name, and `ClientEvent`, their union discriminated by that name.

The dialogue service builds every event's data from these models; the gateway forwards them with the
discussion's id added (`discussionId`); the typed client, the CLI, the tests and docs/gateway.md read them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from adp_common.schemas.dialogue import TERMINAL_EVENTS, PersonaSpec


class Payload(BaseModel):
    # Unknown fields are kept, not refused: a newer server may add some, and an older client still reads it.
    model_config = ConfigDict(extra="allow")


class Message(Payload):
    id: str
    persona: str
    content: str
    turn: int = Field(description="unique within the discussion, in speaking order (User messages included)")
    round: int
    provider: str | None = None
    model: str | None = None
    inputTokens: int | None = Field(default=None, description="absent on the User's own messages")
    outputTokens: int | None = Field(default=None, description="absent on the User's own messages")
    createdAt: str


class RoundInfo(Payload):
    number: int
    messages: list[Message]


class Option(Payload):
    id: str
    text: str


class Question(Payload):
    id: str
    text: str
    options: list[Option]


class QuestionSet(Payload):
    id: str
    roundNumber: int
    questions: list[Question]


class Summary(Payload):
    id: str
    roundNumber: int
    content: str
    tokensBefore: int
    tokensAfter: int
    reason: str
    createdAt: str


class Resolution(Payload):
    resolved: bool
    round: int
    solution: str
    finalAnswer: str
    score: float | None = None
    reasons: list[str] = Field(default_factory=list)


# ---- one payload per event ----------------------------------------------------------------------------------
class DiscussionStarted(Payload):
    topic: str
    personas: list[PersonaSpec]
    maxRounds: int


class MessageStart(Payload):
    persona: str
    turn: int
    round: int
    restart: bool = Field(default=False, description="a re-run of the turn: drop what was shown of it")


class MessageChunk(Payload):
    """Live only (no `id:`): a piece of the answer being written."""

    persona: str
    turn: int
    round: int
    chunk: str
    restart: bool = False


class MessageComplete(Payload):
    message: Message


class RoundComplete(Payload):
    round: RoundInfo


class QuestionsGenerated(Payload):
    questionSet: QuestionSet
    roundNumber: int


class SummaryCreated(Payload):
    summary: Summary


class DiscussionResolved(Payload):
    status: Literal["resolved"] = "resolved"
    resolution: Resolution
    finalAnswer: str


class DiscussionCompleted(Payload):
    status: Literal["completed"] = "completed"
    round: int
    reason: str = ""


class DiscussionStopped(Payload):
    status: Literal["stopped"] = "stopped"
    round: int


class DiscussionFailed(Payload):
    status: Literal["failed"] = "failed"
    code: str
    message: str
    step: str | None = None
    retry: int = 0


class ErrorPayload(Payload):
    code: str
    message: str
    lastEventId: int | None = Field(default=None, description="SLOW_CONSUMER: resume after this id")


PAYLOADS: dict[str, type[Payload]] = {
    "discussion-started": DiscussionStarted,
    "message-start": MessageStart,
    "message-chunk": MessageChunk,
    "message-complete": MessageComplete,
    "round-complete": RoundComplete,
    "questions-generated": QuestionsGenerated,
    "summary-created": SummaryCreated,
    TERMINAL_EVENTS["resolved"]: DiscussionResolved,
    TERMINAL_EVENTS["completed"]: DiscussionCompleted,
    TERMINAL_EVENTS["stopped"]: DiscussionStopped,
    TERMINAL_EVENTS["failed"]: DiscussionFailed,
    "error": ErrorPayload,
}


def event_data(name: str, payload: Payload) -> tuple[str, dict[str, Any]]:
    """An event as the dialogue service stores it: its name and its data (checked against `PAYLOADS`)."""
    if not isinstance(payload, PAYLOADS[name]):
        raise TypeError(f"{name} carries {PAYLOADS[name].__name__}, not {type(payload).__name__}")
    return name, payload.model_dump(mode="json")


# ---- what a client receives -----------------------------------------------------------------------------------
class _ClientEvent(BaseModel):
    id: int | None = Field(default=None, description="the SSE id (per-discussion seq); none on message-chunk")
    discussionId: str = ""


class DiscussionStartedEvent(_ClientEvent):
    event: Literal["discussion-started"] = "discussion-started"
    data: DiscussionStarted


class MessageStartEvent(_ClientEvent):
    event: Literal["message-start"] = "message-start"
    data: MessageStart


class MessageChunkEvent(_ClientEvent):
    event: Literal["message-chunk"] = "message-chunk"
    data: MessageChunk


class MessageCompleteEvent(_ClientEvent):
    event: Literal["message-complete"] = "message-complete"
    data: MessageComplete


class RoundCompleteEvent(_ClientEvent):
    event: Literal["round-complete"] = "round-complete"
    data: RoundComplete


class QuestionsGeneratedEvent(_ClientEvent):
    event: Literal["questions-generated"] = "questions-generated"
    data: QuestionsGenerated


class SummaryCreatedEvent(_ClientEvent):
    event: Literal["summary-created"] = "summary-created"
    data: SummaryCreated


class DiscussionResolvedEvent(_ClientEvent):
    event: Literal["discussion-resolved"] = "discussion-resolved"
    data: DiscussionResolved


class DiscussionCompletedEvent(_ClientEvent):
    event: Literal["discussion-completed"] = "discussion-completed"
    data: DiscussionCompleted


class DiscussionStoppedEvent(_ClientEvent):
    event: Literal["discussion-stopped"] = "discussion-stopped"
    data: DiscussionStopped


class DiscussionFailedEvent(_ClientEvent):
    event: Literal["discussion-failed"] = "discussion-failed"
    data: DiscussionFailed


class ErrorEvent(_ClientEvent):
    event: Literal["error"] = "error"
    data: ErrorPayload


ClientEvent = Annotated[
    DiscussionStartedEvent
    | MessageStartEvent
    | MessageChunkEvent
    | MessageCompleteEvent
    | RoundCompleteEvent
    | QuestionsGeneratedEvent
    | SummaryCreatedEvent
    | DiscussionResolvedEvent
    | DiscussionCompletedEvent
    | DiscussionStoppedEvent
    | DiscussionFailedEvent
    | ErrorEvent,
    Field(discriminator="event"),
]
CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)


def parse_client_event(event: str, data: str, id: str | None = None) -> ClientEvent | None:
    """One SSE event (name, JSON data with `discussionId`, id) as its typed model; None for an event name
    this client does not know (a newer server's). Raises ValueError when a known event is malformed."""
    if event not in PAYLOADS:
        return None
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"{event}: the data is not a JSON object")
    discussion_id = body.pop("discussionId", "")
    seq = int(id) if id is not None and id.isdigit() else None
    return CLIENT_EVENT.validate_python({"event": event, "id": seq, "discussionId": discussion_id, "data": body})
