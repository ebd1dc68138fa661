"""The discussion's step kinds, one module each, and the table the engine dispatches on."""

from __future__ import annotations

from adp_dialogue.steps import final, questions, summary, turn
from adp_dialogue.steps.common import StepRunner

RUNNERS: dict[str, StepRunner] = {
    "turn": turn.run,
    "summary": summary.run,
    "questions": questions.run,
    "final": final.run,
}
