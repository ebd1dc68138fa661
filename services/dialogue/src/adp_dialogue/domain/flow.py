"""What happens after a round (pure): summary, resolution, questions, next round or wait."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adp_dialogue.domain.policy import QuestionTrigger, question_trigger, summary_due
from adp_dialogue.domain.prompts import Msg
from adp_dialogue.domain.resolution import Assessment, ResolutionConfig, assess

Action = Literal["summary", "final", "completed", "questions", "next_round", "wait"]


@dataclass(frozen=True)
class RoundState:
    topic: str
    personas: list[str]
    round: int
    max_rounds: int
    token_count: int
    token_limit: int
    last_summary_round: int
    auto_mode: bool
    has_question_set: bool
    messages: list[Msg]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""
    assessment: Assessment | None = None
    trigger: QuestionTrigger | None = None


def after_round(
    s: RoundState,
    *,
    summary_done: bool = False,
    auto_questions: bool = True,
    resolution: ResolutionConfig | None = None,
) -> Decision:
    """Order after a round: auto-summary check, then resolution check, then auto-questions, then go on/wait."""
    if not summary_done:
        why = summary_due(s.token_count, s.token_limit, s.round, s.last_summary_round)
        if why is not None:
            return Decision("summary", why)
    a = assess(s.messages, s.personas, s.round, s.max_rounds, resolution)
    if a.resolved:
        return Decision("final", "resolved", assessment=a)
    if s.round >= s.max_rounds:
        return Decision("completed", "max rounds reached without an extractable solution", assessment=a)
    if auto_questions and not s.auto_mode and not s.has_question_set:
        trig = question_trigger(s.topic, s.messages, s.round)
        if trig is not None:
            return Decision("questions", trig.reason, assessment=a, trigger=trig)
    if s.auto_mode:
        return Decision("next_round", "auto mode", assessment=a)
    return Decision("wait", "waiting for the user", assessment=a)
