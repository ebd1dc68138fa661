"""The terminal client's rendering: discussion events in, transcript out, each event shown once (seq and
message-id de-duplication), a spinner while a persona thinks.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from adp_cli.terminal.transport import SseEvent
from adp_common.schemas.dialogue import TERMINAL_EVENT_NAMES

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
PERSONA_COLORS = {"analyzer": "35", "solver": "34", "moderator": "33", "user": "90"}  # purple, blue, amber, grey


# ---- terminal output ---------------------------------------------------------------------------------------


@dataclass
class Style:
    color: bool

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def persona(self, name: str) -> str:
        code = PERSONA_COLORS.get(name.lower(), "36")
        return self.paint(name, f"1;{code}")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def error(self, text: str) -> str:
        return self.paint(text, "1;31")

    def ok(self, text: str) -> str:
        return self.paint(text, "1;32")


def use_color(mode: str, stream: TextIO) -> bool:
    if mode == "never":
        return False
    if mode == "always":
        return True
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


@dataclass
class Bubble:
    persona: str
    round: int
    printed: str = ""
    complete: bool = False


@dataclass
class DiscussionState:
    """What the terminal has shown so far; applies each event once (seq and message-id de-duplication)."""

    discussion_id: str
    last_seq: int = 0
    round: int = 0
    bubbles: dict[str, Bubble] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    question_set: dict[str, Any] | None = None
    question_sets_seen: set[str] = field(default_factory=set)
    summaries_seen: set[str] = field(default_factory=set)
    resolved: bool = False
    ended: str | None = None  # the terminal status (completed, stopped, resolved, failed) once announced
    final_answer: str | None = None
    round_done: bool = False
    thinking: str | None = None  # persona whose first token we are waiting for
    open_line: bool = False  # a streamed message is being written on the current line


class Terminal:
    """Renders discussion events; a spinner runs while a persona is thinking (TTY only)."""

    def __init__(self, out: TextIO, style: Style, spinner: bool) -> None:
        self.out = out
        self.style = style
        self.spinner_on = spinner
        self.frames = itertools.cycle(SPINNER)
        self.spinner_shown = False

    def write(self, text: str) -> None:
        self.clear_spinner()
        self.out.write(text)
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def spin(self, persona: str) -> None:
        if not self.spinner_on:
            return
        self.out.write(f"\r{next(self.frames)} {self.style.persona(persona)} {self.style.dim('is thinking…')}\x1b[K")
        self.out.flush()
        self.spinner_shown = True

    def clear_spinner(self) -> None:
        if self.spinner_shown:
            self.out.write("\r\x1b[K")
            self.spinner_shown = False


def _on_message_start(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    rnd, turn, persona = int(first(d.get("round"), st.round) or 0), d.get("turn"), str(d.get("persona") or "?")
    enter_round(st, rnd, term)
    key = f"{rnd}:{turn}"
    b = st.bubbles.get(key)
    if b is not None and b.complete and not d.get("restart"):
        return
    if b is not None and d.get("restart"):
        end_line(st, term)
        term.line(s.dim(f"({persona} restarted on another provider)"))
    end_line(st, term)
    st.bubbles[key] = Bubble(persona, rnd)
    term.line(f"● {s.persona(persona)}")
    st.thinking = persona


def _on_message_chunk(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    key = f"{first(d.get('round'), st.round)}:{d.get('turn')}"
    b = st.bubbles.get(key)
    if b is None:
        b = st.bubbles[key] = Bubble(str(d.get("persona") or "?"), int(first(d.get("round"), st.round) or 0))
        end_line(st, term)
        term.line(f"● {s.persona(b.persona)}")
    if b.complete:
        return
    chunk = str(first(d.get("chunk"), d.get("delta"), ""))
    st.thinking = None
    b.printed += chunk
    st.open_line = True
    term.write(chunk)


def _on_message_complete(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    m = d.get("message") or d
    msg_id = first(m.get("id"), m.get("messageId"))
    if msg_id and msg_id in st.message_ids:
        return
    if msg_id:
        st.message_ids.add(str(msg_id))
    persona = str(first(m.get("persona"), m.get("personaName"), m.get("role"), "?"))
    rnd = int(first(m.get("round"), m.get("roundNumber"), st.round) or 0)
    enter_round(st, rnd, term)  # a User message opens its round: the header comes first
    key = f"{rnd}:{m.get('turn')}"
    b = st.bubbles.get(key)
    content = str(first(m.get("content"), m.get("text"), ""))
    if b is None:  # never saw it stream (e.g. a User message, or it finished while we were away)
        end_line(st, term)
        b = st.bubbles[key] = Bubble(persona, rnd)
        term.line(f"● {s.persona(persona)}")
    if content.startswith(b.printed):
        rest = content[len(b.printed) :]
        if rest:
            term.write(rest)
    else:  # the stream was interrupted or restarted: show the message as stored
        term.line("")
        term.line(s.dim("(complete message)"))
        term.write(content)
    b.printed = content
    b.complete = True
    st.thinking = None
    st.open_line = True
    end_line(st, term)


def _on_round_complete(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    end_line(st, term)
    done = d.get("round")
    if isinstance(done, dict):
        done = first(done.get("number"), done.get("roundNumber"))
    term.line(s.dim(f"── round {first(done, st.round)} complete ──"))
    st.round_done = True
    st.thinking = None


def _on_questions_generated(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    qs = d.get("questionSet") or {}
    qs_id = str(first(qs.get("id"), qs.get("roundNumber"), d.get("roundNumber"), ""))
    if qs_id in st.question_sets_seen or not qs.get("questions"):
        return
    st.question_sets_seen.add(qs_id)
    st.question_set = {**qs, "roundNumber": first(qs.get("roundNumber"), d.get("roundNumber"), st.round)}
    end_line(st, term)
    term.line(s.bold("Questions for you:"))
    for qi, q in enumerate(qs.get("questions") or [], 1):
        term.line(f"  {qi}. {q.get('text', '')}")
        for oi, opt in enumerate(q.get("options") or [], 1):
            term.line(f"     {oi}) {opt.get('text', '')}")


def _on_summary_created(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    summ = d.get("summary") or {}
    if isinstance(summ, dict):
        text = str(first(summ.get("content"), summ.get("text"), summ.get("summary"), ""))
    else:
        text = str(summ)
    key = str(summ.get("id") if isinstance(summ, dict) and summ.get("id") else text[:80])
    if key in st.summaries_seen:
        return
    st.summaries_seen.add(key)
    end_line(st, term)
    body = text.strip()
    if body[:8].lower() == "summary:":  # the Moderator often starts with the label already
        body = body[8:].lstrip()
    term.line(s.bold("Summary: ") + body)


def _on_error(st: DiscussionState, d: dict[str, Any], term: Terminal) -> None:
    s = term.style
    end_line(st, term)
    term.line(s.error(f"error {d.get('code', '')}: {d.get('message', '')}".strip()))
    st.round_done = True
    st.thinking = None


EventHandler = Callable[[DiscussionState, dict[str, Any], Terminal], None]
_HANDLERS: dict[str, EventHandler] = {
    "message-start": _on_message_start,
    "message-chunk": _on_message_chunk,
    "message-complete": _on_message_complete,
    "round-complete": _on_round_complete,
    "questions-generated": _on_questions_generated,
    "summary-created": _on_summary_created,
    "error": _on_error,
}


def apply_event(st: DiscussionState, ev: SseEvent, term: Terminal) -> None:
    """Show one event (idempotent: replays and duplicates are ignored)."""
    if ev.id and ev.id.isdigit():
        seq = int(ev.id)
        if seq <= st.last_seq:
            return
        st.last_seq = seq
    d: dict[str, Any] = ev.data if isinstance(ev.data, dict) else {}
    if ev.event in TERMINAL_EVENT_NAMES:
        show_end(st, ev.event, d, term)
        return
    handler = _HANDLERS.get(ev.event)
    if handler is not None:
        handler(st, d, term)


def enter_round(st: DiscussionState, rnd: int, term: Terminal) -> None:
    """Print the header of round `rnd` the first time anything of it is shown."""
    if rnd > st.round:
        st.round = rnd
        st.round_done = False
        end_line(st, term)
        term.line(term.style.bold(f"── Round {rnd} ──"))


def show_end(st: DiscussionState, name: str, d: dict[str, Any], term: Terminal) -> None:
    """The discussion's terminal event: say how it ended; nothing more will come."""
    s = term.style
    end_line(st, term)
    st.ended = name.removeprefix("discussion-")
    st.thinking = None
    if name == "discussion-resolved":
        res = d.get("resolution")
        answer = first(d.get("finalAnswer"), res.get("finalAnswer") if isinstance(res, dict) else None)
        st.resolved = True
        st.final_answer = str(answer) if answer is not None else None
        term.line(s.ok("✔ Resolved") + (f" — final answer:\n{answer}" if answer else ""))
    elif name == "discussion-completed":
        term.line(s.bold(f"■ Completed: reached {first(d.get('round'), st.round)} round(s), the maximum"))
    elif name == "discussion-stopped":
        term.line(s.dim(f"■ Stopped after round {first(d.get('round'), st.round)}"))
    else:
        term.line(s.error(f"✖ Failed: {d.get('code', '')} {d.get('message', '')}".rstrip()))


def end_line(st: DiscussionState, term: Terminal) -> None:
    if st.open_line:
        term.line("")
        st.open_line = False
