"""The summary step: the Moderator condenses the discussion so far; after a round, the flow decides again."""

from __future__ import annotations

import uuid
from typing import Any

from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import DialogueJob
from adp_common.schemas.events import event_data
from adp_dialogue import store, views
from adp_dialogue.domain import prompts
from adp_dialogue.domain.text import estimate_tokens
from adp_dialogue.steps.after_round import after_round
from adp_dialogue.steps.common import Build, Commit, EventList, Loaded, QuickCommit, StepHost


async def run(host: StepHost, job: DialogueJob, lo: Loaded, num_delivered: int) -> tuple[Build, QuickCommit | None]:
    d = lo.d
    did = d.id
    base = prompts.summary_messages(lo.context(), job.round)
    text, *_ = await host.calls.complete_full(
        job, d, num_delivered, base, route="moderator", persona="Moderator", task="summary"
    )

    async def build(conn: store.Conn, now: Loaded) -> Commit:
        before = now.d.token_count
        after = estimate_tokens(text)
        row = await store.insert_summary(
            conn,
            id=uuid.uuid4().hex,
            discussion_id=did,
            round=job.round,
            content=text,
            tokens_before=before,
            tokens_after=after,
            reason=job.data.get("reason", "requested"),
        )
        created = payloads.SummaryCreated(summary=payloads.Summary(**views.summary_dict(row))) if row else None
        events: EventList = [event_data("summary-created", created)] if created else []
        updates: dict[str, Any] = {"token_count": after}
        if job.data.get("then") == "post_round":
            now.summary = prompts.SummaryRef(job.round, text)
            return after_round(host, now, job.round, after, now.messages, events, updates, summary_done=True)
        return Commit(events, None, updates)

    return build, None
