"""What follows a finished round (or its summary): the flow decision turned into the step's commit."""

from __future__ import annotations

import logging
from typing import Any

from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import TERMINAL_EVENTS
from adp_common.schemas.events import event_data
from adp_dialogue.domain import flow, prompts
from adp_dialogue.steps.common import (
    Commit,
    EventList,
    Loaded,
    StepHost,
    final_job,
    questions_job,
    summary_job,
    turn_job,
)

log = logging.getLogger("adp.dialogue.engine")


def after_round(
    host: StepHost,
    lo: Loaded,
    round_number: int,
    tokens: int,
    msgs: list[prompts.Msg],
    events: EventList,
    updates: dict[str, Any],
    *,
    summary_done: bool,
) -> Commit:
    did = lo.d.id
    state = flow.RoundState(
        topic=lo.d.topic,
        personas=[p.name for p in lo.personas],
        round=round_number,
        max_rounds=lo.d.max_rounds,
        token_count=tokens,
        token_limit=lo.d.token_limit,
        last_summary_round=lo.summary.round if lo.summary else 0,
        auto_mode=lo.d.auto_mode,
        has_question_set=round_number in lo.question_rounds,
        messages=msgs,
    )
    dec = flow.after_round(
        state, summary_done=summary_done, auto_questions=host.s.auto_questions, resolution=host.resolution_cfg
    )
    log.info("after round %d of %s: %s (%s)", round_number, did, dec.action, dec.reason)
    if dec.action == "summary":
        return Commit(events, summary_job(did, round_number, "post_round", dec.reason), updates)
    if dec.action == "final":
        assert dec.assessment is not None
        return Commit(events, final_job(did, round_number, dec.assessment), updates)
    if dec.action == "completed":
        updates["status"] = "completed"
        end = payloads.DiscussionCompleted(round=round_number, reason=dec.reason)
        events.append(event_data(TERMINAL_EVENTS["completed"], end))
        return Commit(events, None, updates)
    if dec.action == "questions":
        return Commit(events, questions_job(did, round_number, dec.reason), updates)
    if dec.action == "next_round":
        updates["current_round"] = round_number + 1
        return Commit(events, turn_job(did, round_number + 1, 1), updates)
    return Commit(events, None, updates)
