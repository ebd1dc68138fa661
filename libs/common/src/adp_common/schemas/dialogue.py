"""dialogue service messages: commands and queries from the gateway, discussion events, work jobs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, RootModel, model_validator
from pydantic.json_schema import JsonDict

from adp_common.envelope import event_type, utcnow

# Limits of what a user may ask for: the gateway (REST, Socket.IO, OpenAPI) and the dialogue service both
# check these, so a request is accepted or refused the same way wherever it enters.
TOPIC_MIN_CHARS = 10
TOPIC_MAX_CHARS = 1000
MAX_PERSONAS = 8
PERSONA_NAME_MAX_CHARS = 40
ROLE_PROMPT_MAX_CHARS = 4000
MAX_ROUNDS_LIMIT = 100
INPUT_MAX_CHARS = 5000
MAX_FILES = 5

# What users type is stored as PostgreSQL text, which cannot hold NUL: documented as a pattern, refused by
# the commands' validators.
NO_NUL = r"^[^\x00]*$"
_NO_NUL_DOC: JsonDict = {"pattern": NO_NUL}

Topic = Annotated[
    str,
    Field(
        min_length=TOPIC_MIN_CHARS,
        max_length=TOPIC_MAX_CHARS,
        json_schema_extra=_NO_NUL_DOC,
        description=f"{TOPIC_MIN_CHARS} to {TOPIC_MAX_CHARS} characters (after trimming spaces)",
    ),
]


# Characters a name shown to other people may not hold, so it cannot display as something it is not: Unicode
# categories Cc, Cf, Co, Cs, Zl and Zp (controls; formatting such as bidi overrides and zero-width marks; private
# use; surrogates; line and paragraph separators). Written out as ranges because computing them from unicodedata
# takes a second at import; a unit test checks them against unicodedata.
HIDDEN_NAME_CHAR_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xF8FF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xF0000, 0xFFFFD),
    (0x100000, 0x10FFFD),
)  # fmt: skip


def _escaped(cp: int) -> str:
    return f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


PRINTABLE_NAME = "^[^" + "".join(f"{_escaped(a)}-{_escaped(b)}" for a, b in HIDDEN_NAME_CHAR_RANGES) + "]*$"
_PRINTABLE_NAME_RE = re.compile(PRINTABLE_NAME)


def printable_name(name: str) -> str:
    """Refuses a name holding one of the hidden characters above (the schema documents the same pattern)."""
    if not _PRINTABLE_NAME_RE.match(name):
        bad = next(ch for ch in name if not _PRINTABLE_NAME_RE.match(ch))
        nul = ", NUL" if bad == "\x00" else ""
        raise ValueError(f"name contains a control or formatting character (U+{ord(bad):04X}{nul})")
    return name


PersonaName = Annotated[
    str,
    Field(min_length=1, max_length=PERSONA_NAME_MAX_CHARS, json_schema_extra={"pattern": PRINTABLE_NAME}),
    AfterValidator(printable_name),
]
MaxRounds = Annotated[int, Field(ge=1, le=MAX_ROUNDS_LIMIT)]
UserText = Annotated[str, Field(min_length=1, max_length=INPUT_MAX_CHARS, json_schema_extra=_NO_NUL_DOC)]

# Each way a discussion ends has one terminal event, sent exactly once; after it a client's stream closes.
TERMINAL_EVENTS = {
    "completed": "discussion-completed",  # maxRounds reached without a resolution
    "stopped": "discussion-stopped",  # the user stopped it
    "resolved": "discussion-resolved",  # the Moderator resolved it (carries the resolution)
    "failed": "discussion-failed",  # a step failed past its retries
}
TERMINAL_EVENT_NAMES = frozenset(TERMINAL_EVENTS.values())
TERMINAL_STATUSES = tuple(TERMINAL_EVENTS)


class PersonaSpec(BaseModel):
    name: PersonaName
    role_prompt: str = Field(
        default="",
        max_length=ROLE_PROMPT_MAX_CHARS,
        json_schema_extra=_NO_NUL_DOC,
        description="empty: a default persona's own prompt (Analyzer, Solver, Moderator), else none",
    )
    route: str = Field(
        default="default",
        max_length=100,
        description="llm-router route for this persona",
        json_schema_extra=_NO_NUL_DOC,
    )


class FileRef(BaseModel):
    """A file the gateway accepted; its extracted text is discussion context."""

    id: str | None = None
    name: str = Field(max_length=255)
    content_type: str
    size: int = Field(ge=0)
    text: str = Field(default="", description="extracted text (PDF/plain); empty for images")


def _reject_nul(*texts: str | None) -> None:
    """PostgreSQL text cannot hold NUL: what users type is refused with it."""
    if any(t is not None and "\x00" in t for t in texts):
        raise ValueError("text must not contain NUL characters")


class _Command(BaseModel):
    user_id: str


class CreateCommand(_Command):
    """Start a discussion (topic limits are checked after trimming spaces)."""

    action: Literal["create"] = "create"
    key_id: str | None = Field(default=None, description="the API key that creates it: its LLM calls are charged to it")
    topic: str
    personas: list[PersonaSpec] | None = None
    max_rounds: MaxRounds | None = None
    auto: bool = False
    files: list[FileRef] = Field(default_factory=list, max_length=MAX_FILES)

    @model_validator(mode="after")
    def _no_nul_characters(self) -> CreateCommand:
        _reject_nul(self.topic, *[x for p in self.personas or [] for x in (p.name, p.role_prompt, p.route)])
        for f in self.files:  # extracted file text: NUL is dropped, not refused
            f.text = f.text.replace("\x00", "")
            f.name = f.name.replace("\x00", "")
        return self


class _OnDiscussion(_Command):
    discussion_id: str


class ProceedCommand(_OnDiscussion):
    """Run the next round (or retry the step that failed)."""

    action: Literal["proceed"] = "proceed"


class AnswersCommand(_OnDiscussion):
    """Answer a round's questions ({questionId: [optionId]}); the next round starts."""

    action: Literal["answers"] = "answers"
    answers: dict[str, list[str]]
    round_number: int | None = None

    @model_validator(mode="after")
    def _no_nul_characters(self) -> AnswersCommand:
        _reject_nul(*[x for k, v in self.answers.items() for x in (k, *v)])
        return self


class InputCommand(_OnDiscussion):
    """The user's own message; the next round starts with it."""

    action: Literal["input"] = "input"
    input: str = Field(max_length=INPUT_MAX_CHARS)

    @model_validator(mode="after")
    def _no_nul_characters(self) -> InputCommand:
        _reject_nul(self.input)
        return self


class QuestionsCommand(_OnDiscussion):
    """Ask the Moderator for questions to the user about the current round."""

    action: Literal["questions"] = "questions"
    round_number: int | None = None


class SummaryCommand(_OnDiscussion):
    """Summarise the discussion so far."""

    action: Literal["summary"] = "summary"
    round_number: int | None = None


class StopCommand(_OnDiscussion):
    """End the discussion (event discussion-stopped)."""

    action: Literal["stop"] = "stop"


Command = (
    CreateCommand | ProceedCommand | AnswersCommand | InputCommand | QuestionsCommand | SummaryCommand | StopCommand
)


class DialogueCommand(RootModel[Annotated[Command, Field(discriminator="action")]]):
    """Request on `<prefix>.dialogue.command`: one model per action, told apart by `action`.
    Reply: DiscussionView (or an error reply)."""


# Event sequence numbers are PostgreSQL bigints: a client's resume point above this is a bad request.
MAX_EVENT_SEQ = 2**63 - 1


class DialogueQuery(BaseModel):
    """Request on `<prefix>.dialogue.query`."""

    kind: Literal["list", "get", "head", "events", "export", "active_count"] = Field(
        description="head: the discussion without messages, rounds, summaries or questions (cheap ownership "
        "check); events: its durable events after `after_seq` (EventsReply), the history a live listener replays"
    )
    user_id: str | None = None
    discussion_id: str | None = None
    format: Literal["json", "markdown"] = "json"
    after_seq: int = Field(default=0, ge=0, le=MAX_EVENT_SEQ, description="events: only those with a higher seq")


class DiscussionView(BaseModel):
    """A discussion as clients see it (camelCase keys as in the contract)."""

    id: str
    userId: str
    topic: str
    status: str
    currentRound: int = 0
    maxRounds: int = 20
    personas: list[PersonaSpec] = Field(default_factory=list)
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    questions: list[dict[str, Any]] = Field(default_factory=list)
    summaries: list[dict[str, Any]] = Field(default_factory=list)
    resolution: dict[str, Any] | None = None
    tokenCount: int = 0
    tokenLimit: int = 4000
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    error: dict[str, Any] | None = None
    hasActiveDiscussion: bool = Field(
        default=False, description="whether the discussion's user has any unfinished (running or waiting) discussion"
    )


class DiscussionList(BaseModel):
    discussions: list[DiscussionView]


class ExportReply(BaseModel):
    format: Literal["json", "markdown"]
    content: str


class CountReply(BaseModel):
    count: int


@event_type("discussion.event")
class DiscussionEvent(BaseModel):
    """A discussion event. Durable ones go to `Catalog.discussion_events(id)` with a per-discussion `seq`
    (the SSE id); `message-chunk` goes to `Catalog.discussion_chunks(id)` on core NATS with seq 0."""

    discussionId: str
    seq: int = 0
    event: str
    data: dict[str, Any] = Field(default_factory=dict)
    time: datetime = Field(default_factory=utcnow)


class EventsReply(BaseModel):
    """A discussion's durable events in seq order (answer to DialogueQuery kind 'events')."""

    events: list[DiscussionEvent]


@event_type("dialogue.job")
class DialogueJob(BaseModel):
    """A discussion step on the DIALOGUE_WORK work queue. Idempotent by (discussion_id, step_key)."""

    discussion_id: str
    kind: Literal["turn", "summary", "questions", "resolution", "final"]
    step_key: str = Field(description="unique per step, e.g. 'r3t2' for round 3 turn 2")
    round: int = 0
    position: int = 0
    data: dict[str, Any] = Field(default_factory=dict)
