"""Prompt and context building for every kind of step (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from adp_common.schemas.dialogue import PersonaSpec
from adp_common.schemas.llm import ChatMessage
from adp_dialogue.domain.personas import USER_PERSONA


@dataclass(frozen=True)
class Msg:
    """A stored message as the prompt builder sees it."""

    persona: str
    content: str
    round: int
    turn: int


@dataclass(frozen=True)
class SummaryRef:
    round: int  # the summary covers rounds 1..round
    content: str


@dataclass(frozen=True)
class FileText:
    name: str
    text: str


@dataclass
class Context:
    topic: str
    personas: list[PersonaSpec]
    messages: list[Msg] = field(default_factory=list)
    summary: SummaryRef | None = None
    files: list[FileText] = field(default_factory=list)


MAX_FILE_CHARS = 6000
RESPONSE_GUIDE = (
    "Answer in a natural, conversational way in 120 to 250 words. Refer to what the others said by name, "
    "add something new rather than repeating, and make your answer complete: end on a full sentence."
)


def visible_messages(ctx: Context) -> list[Msg]:
    """Messages after the latest summary (the summary replaces the rounds it covers)."""
    start = ctx.summary.round if ctx.summary else 0
    return sorted((m for m in ctx.messages if m.round > start), key=lambda m: (m.round, m.turn))


def transcript(messages: list[Msg]) -> str:
    lines: list[str] = []
    current = None
    for m in messages:
        if m.round != current:
            current = m.round
            lines.append(f"--- Round {m.round} ---")
        lines.append(f"{m.persona}: {m.content.strip()}")
    return "\n".join(lines)


def _header(ctx: Context) -> list[str]:
    parts = [f"Topic: {ctx.topic.strip()}"]
    if ctx.summary is not None:
        parts.append(f"Summary of the discussion up to round {ctx.summary.round}:\n{ctx.summary.content.strip()}")
    return parts


def files_block(files: list[FileText]) -> str:
    blocks = []
    for f in files:
        text = f.text.strip()
        if not text:
            blocks.append(f"[File {f.name}: no extractable text]")
            continue
        if len(text) > MAX_FILE_CHARS:
            text = text[:MAX_FILE_CHARS] + " […truncated]"
        blocks.append(f"[File {f.name}]\n{text}")
    return "Files the user provided:\n" + "\n\n".join(blocks)


def turn_messages(ctx: Context, persona_index: int, round_number: int) -> list[ChatMessage]:
    """Prompt for the persona at 0-based `persona_index` speaking in `round_number`."""
    me = ctx.personas[persona_index]
    others = [p.name for p in ctx.personas if p.name != me.name]
    system = (
        f"{me.role_prompt.strip() or f'You are {me.name}.'}\n\n"
        f"You are {me.name}, taking part in a round-based discussion with {', '.join(others) or 'no one else'} "
        f"about a topic the user gave. {RESPONSE_GUIDE}"
    )
    parts = _header(ctx)
    seen = visible_messages(ctx)
    if round_number == 1 and persona_index == 0 and ctx.files:
        parts.append(files_block(ctx.files))
    if seen:
        parts.append("Discussion so far:\n" + transcript(seen))
    previous = seen[-1] if seen else None
    if previous is not None:
        who = "The user" if previous.persona == USER_PERSONA else previous.persona
        parts.append(f"{who} just said:\n{previous.content.strip()}")
    else:
        parts.append("You open the discussion.")
    parts.append(f"Round {round_number}. Your turn, {me.name}.")
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content="\n\n".join(parts))]


def continue_messages(base: list[ChatMessage], partial: str) -> list[ChatMessage]:
    """Ask the model to finish a response that was cut off."""
    return [
        *base,
        ChatMessage(role="assistant", content=partial),
        ChatMessage(
            role="user",
            content="Your answer was cut off. Continue exactly where you stopped, without repeating anything, "
            "and finish on a complete sentence.",
        ),
    ]


def summary_messages(ctx: Context, up_to_round: int) -> list[ChatMessage]:
    seen = [m for m in visible_messages(ctx) if m.round <= up_to_round]
    parts = _header(ctx)
    parts.append("Discussion to summarise:\n" + transcript(seen))
    parts.append(
        f"Write a concise summary of the discussion up to round {up_to_round}: the main points of each participant, "
        "what was agreed, what is still open, and any input from the user. At most 200 words."
    )
    return [
        ChatMessage(role="system", content="You are the Moderator, summarising a discussion faithfully and briefly."),
        ChatMessage(role="user", content="\n\n".join(parts)),
    ]


def questions_messages(ctx: Context, round_number: int) -> list[ChatMessage]:
    parts = _header(ctx)
    seen = visible_messages(ctx)
    if seen:
        parts.append("Discussion so far:\n" + transcript(seen))
    parts.append(
        f"After round {round_number}, write 2 to 5 multiple-choice questions for the user whose answers would help "
        "the discussion most (clarify goals, constraints, preferences). Each question has 2 to 5 short options. "
        'Reply with JSON only: {"questions": [{"text": "...", "options": ["...", "..."]}]}'
    )
    return [
        ChatMessage(role="system", content="You are the Moderator; you ask the user precise clarifying questions."),
        ChatMessage(role="user", content="\n\n".join(parts)),
    ]


def final_messages(ctx: Context, solution: str) -> list[ChatMessage]:
    parts = _header(ctx)
    seen = visible_messages(ctx)
    if seen:
        parts.append("Discussion:\n" + transcript(seen[-3 * max(1, len(ctx.personas)) :]))
    parts.append(f"Agreed solution: {solution}")
    parts.append(
        "Write the final, unified answer for the user in 500 to 1000 characters: the agreed solution, the key steps, "
        "and the main caveat. Plain prose, complete sentences."
    )
    return [
        ChatMessage(role="system", content="You are the Moderator, writing the group's final answer for the user."),
        ChatMessage(role="user", content="\n\n".join(parts)),
    ]
