"""The questions step: the Moderator asks the user questions (parsed, with a fallback set when unusable)."""

from __future__ import annotations

import logging
import uuid

from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import DialogueJob
from adp_common.schemas.events import event_data
from adp_dialogue import store
from adp_dialogue.domain import prompts, questions
from adp_dialogue.steps.common import Build, Commit, EventList, Loaded, QuickCommit, StepHost

log = logging.getLogger("adp.dialogue.engine")


async def run(host: StepHost, job: DialogueJob, lo: Loaded, num_delivered: int) -> tuple[Build, QuickCommit | None]:
    d = lo.d
    did = d.id
    base = prompts.questions_messages(lo.context(), job.round)
    req = host.calls.request(job, d, num_delivered, base, route="moderator", persona="Moderator", task="questions")
    res = await host.calls.llm.complete(req)
    parsed = questions.parse_questions(res.text)
    if parsed.problems:
        log.info("questions of %s: %s", did, "; ".join(parsed.problems))

    async def build(conn: store.Conn, now: Loaded) -> Commit:
        qs = [q.to_dict() for q in parsed.questions]
        row = await store.insert_question_set(
            conn,
            id=uuid.uuid4().hex,
            discussion_id=did,
            round=job.round,
            questions=qs,
            reason=job.data.get("reason", "requested"),
            fallback=parsed.fallback,
        )
        events: EventList = []
        if row:
            qset = payloads.QuestionSet(id=row.id, roundNumber=job.round, questions=qs)
            events.append(
                event_data("questions-generated", payloads.QuestionsGenerated(questionSet=qset, roundNumber=job.round))
            )
        return Commit(events, None, {})

    return build, None
