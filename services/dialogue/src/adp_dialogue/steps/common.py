"""What every step kind shares: the step's view of its discussion, what a step commits, the jobs it queues
next, and the host (the engine) a step runs on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from adp_common.schemas.dialogue import DialogueJob, DiscussionEvent, PersonaSpec
from adp_dialogue import store
from adp_dialogue.domain import prompts, resolution
from adp_dialogue.domain.personas import turn_step_key
from adp_dialogue.rows import DiscussionRow, StepRow
from adp_dialogue.settings import DialogueSettings

if TYPE_CHECKING:
    from adp_dialogue.steps.llm_calls import StepCalls

EventList = list[tuple[str, dict[str, Any]]]


def job_msg_id(job: DialogueJob) -> str:
    return f"{job.discussion_id}:{job.step_key}:{job.data.get('retry', 0)}"


def turn_job(discussion_id: str, round_number: int, position: int) -> DialogueJob:
    return DialogueJob(
        discussion_id=discussion_id,
        kind="turn",
        step_key=turn_step_key(round_number, position),
        round=round_number,
        position=position,
    )


def summary_job(discussion_id: str, round_number: int, then: str, reason: str) -> DialogueJob:
    return DialogueJob(
        discussion_id=discussion_id,
        kind="summary",
        step_key=f"s{round_number}",
        round=round_number,
        data={"then": then, "reason": reason},
    )


def questions_job(discussion_id: str, round_number: int, reason: str) -> DialogueJob:
    return DialogueJob(
        discussion_id=discussion_id,
        kind="questions",
        step_key=f"q{round_number}",
        round=round_number,
        data={"reason": reason},
    )


def final_job(discussion_id: str, round_number: int, assessment: resolution.Assessment) -> DialogueJob:
    return DialogueJob(
        discussion_id=discussion_id,
        kind="final",
        step_key="final",
        round=round_number,
        data={
            "solution": assessment.solution,
            "score": assessment.score,
            "reasons": assessment.reasons,
        },
    )


@dataclass
class Loaded:
    d: DiscussionRow
    personas: list[PersonaSpec]
    messages: list[prompts.Msg]
    summary: prompts.SummaryRef | None
    files: list[prompts.FileText]
    question_rounds: set[int]

    def context(self) -> prompts.Context:
        return prompts.Context(
            topic=self.d.topic,
            personas=self.personas,
            messages=self.messages,
            summary=self.summary,
            files=self.files,
        )


def loaded(row: StepRow) -> Loaded:
    """A step's view of its discussion from `store.load_step`."""
    latest = row.ctx_summary
    return Loaded(
        d=row.discussion,
        personas=[PersonaSpec(**p) for p in row.discussion.personas],
        messages=[
            prompts.Msg(persona=m["persona"], content=m["content"], round=m["round"], turn=m["turn"])
            for m in row.ctx_messages
        ],
        summary=prompts.SummaryRef(latest["round"], latest["content"]) if latest else None,
        files=[prompts.FileText(f["name"], f["text"]) for f in row.ctx_files],
        question_rounds=set(row.ctx_question_rounds),
    )


@dataclass
class Commit:
    events: EventList
    next_job: DialogueJob | None
    updates: dict[str, Any]


# What a step decides at its commit, from the locked discussion row (and context when read).
Build = Callable[[store.Conn, Loaded], Awaitable[Commit]]
# A step's commit in one statement, if it is still due: what to publish (events, follow-up job), else None.
QuickCommit = Callable[[store.Conn], Awaitable[tuple[list[DiscussionEvent], DialogueJob | None] | None]]


class StepHost(Protocol):
    """What a step runs on (the engine): settings, the database, its LLM calls and event publishing."""

    s: DialogueSettings
    pool: asyncpg.Pool
    calls: StepCalls
    resolution_cfg: resolution.ResolutionConfig

    async def publish_event(self, ev: DiscussionEvent) -> None: ...


# A step kind's runner: makes the step's LLM call(s), then returns how to commit the result.
StepRunner = Callable[[StepHost, DialogueJob, Loaded, int], Awaitable[tuple[Build, QuickCommit | None]]]
