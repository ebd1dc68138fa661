"""The final step: the Moderator writes the final answer of a resolved discussion, which ends it."""

from __future__ import annotations

from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import TERMINAL_EVENTS, DialogueJob
from adp_common.schemas.events import event_data
from adp_dialogue import store
from adp_dialogue.domain import prompts, resolution
from adp_dialogue.steps.common import Build, Commit, EventList, Loaded, QuickCommit, StepHost


async def run(host: StepHost, job: DialogueJob, lo: Loaded, num_delivered: int) -> tuple[Build, QuickCommit | None]:
    solution = job.data.get("solution") or ""
    base = prompts.final_messages(lo.context(), solution)
    text, *_ = await host.calls.complete_full(
        job, lo.d, num_delivered, base, route="moderator", persona="Moderator", task="final"
    )
    final = resolution.fit_final_answer(text, solution)

    async def build(conn: store.Conn, now: Loaded) -> Commit:
        res = {
            "resolved": True,
            "round": job.round,
            "solution": solution,
            "finalAnswer": final,
            "score": job.data.get("score"),
            "reasons": job.data.get("reasons", []),
        }
        end = payloads.DiscussionResolved(resolution=payloads.Resolution(**res), finalAnswer=final)
        events: EventList = [event_data(TERMINAL_EVENTS["resolved"], end)]
        return Commit(events, None, {"status": "resolved", "resolution": res})

    return build, None
