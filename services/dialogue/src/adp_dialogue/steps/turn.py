"""The turn step: one persona speaks, its answer streaming live; a round's last turn decides what follows."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import DialogueJob, DiscussionEvent, PersonaSpec
from adp_common.schemas.events import event_data
from adp_dialogue import outbox, store, views
from adp_dialogue.domain import prompts
from adp_dialogue.domain.personas import USER_PERSONA, turn_number, user_turns_up_to
from adp_dialogue.rows import MessageRow
from adp_dialogue.steps.after_round import after_round
from adp_dialogue.steps.common import Build, Commit, EventList, Loaded, QuickCommit, StepHost, turn_job


@dataclass(frozen=True)
class Spoken:
    """A persona's finished answer in a turn."""

    persona: PersonaSpec
    turn: int
    text: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int

    def message_fields(self, job: DialogueJob) -> dict[str, Any]:
        return {
            "persona": self.persona.name,
            "content": self.text,
            "round": job.round,
            "turn": self.turn,
            "position": job.position,
            "provider": self.provider,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


async def _speak(host: StepHost, job: DialogueJob, lo: Loaded, num_delivered: int) -> Spoken:
    did = lo.d.id
    persona = lo.personas[job.position - 1]
    user_rounds = [m.round for m in lo.messages if m.persona == USER_PERSONA]
    turn = turn_number(job.round, job.position, len(lo.personas), user_turns_up_to(job.round, user_rounds))
    async with host.pool.acquire() as conn:
        _, data = event_data("message-start", payloads.MessageStart(persona=persona.name, turn=turn, round=job.round))
        data.pop("restart")  # set by the store when the turn is re-run
        start = await outbox.add_start_event(conn, did, f"{job.step_key}:start", "message-start", data)
    # message-start and the LLM request leave on the same NATS connection in that order, so every live
    # listener has message-start before the router can even see the request; its JetStream ack is
    # awaited alongside the call rather than before it (one round trip off the time to first chunk).
    # Both tasks are started back to back and each queues its message before its first suspension, so
    # on the next turn of the event loop the two are queued in order and leave in one socket write
    # (the prompt is built first: a busy loop's turn between the two would delay the call).
    base = prompts.turn_messages(lo.context(), job.position - 1, job.round)
    chunk_data = {"persona": persona.name, "turn": turn, "round": job.round}
    ack = asyncio.ensure_future(host.publish_event(start))
    call = asyncio.ensure_future(
        host.calls.complete_full(
            job,
            lo.d,
            num_delivered,
            base,
            route=persona.route,
            persona=persona.name,
            task="turn",
            chunk_data=chunk_data,
        )
    )
    try:
        await ack
    except BaseException:
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        raise
    text, provider, model, tin, tout = await call
    return Spoken(persona, turn, text, provider, model, tin, tout)


def _build(host: StepHost, job: DialogueJob, spoken: Spoken) -> Build:
    did = job.discussion_id

    async def build(conn: store.Conn, now: Loaded) -> Commit:
        row = await store.insert_message(conn, id=uuid.uuid4().hex, discussion_id=did, **spoken.message_fields(job))
        events: EventList = []
        msg = views.message(row) if row else None
        if msg:
            events.append(event_data("message-complete", payloads.MessageComplete(message=msg)))
        tokens = now.d.token_count + spoken.output_tokens
        updates: dict[str, Any] = {"token_count": tokens}
        if job.position < len(now.personas):
            return Commit(events, turn_job(did, job.round, job.position + 1), updates)
        await store.insert_round(conn, did, job.round, tokens)
        msgs = [m for m in now.messages if not (m.round == job.round and m.turn == spoken.turn)]
        if msg:
            msgs.append(prompts.Msg(spoken.persona.name, spoken.text, job.round, spoken.turn))
        round_msgs = [views.message(r) for r in await store.messages(conn, did) if r.round == job.round]
        info = payloads.RoundInfo(number=job.round, messages=round_msgs)
        events.append(event_data("round-complete", payloads.RoundComplete(round=info)))
        return after_round(host, now, job.round, tokens, msgs, events, updates, summary_done=False)

    return build


def _quick(job: DialogueJob, spoken: Spoken) -> QuickCommit:
    did = job.discussion_id

    async def quick(conn: store.Conn) -> tuple[list[DiscussionEvent], DialogueJob | None] | None:
        # A turn before the round's last needs neither the context nor the row's values: one statement
        # (outbox.commit_turn) instead of a transaction of five round trips.
        message = {"id": uuid.uuid4().hex, **spoken.message_fields(job), "created_at": datetime.now(UTC)}
        next_job = turn_job(did, job.round, job.position + 1)
        retry = job.data.get("retry", 0)
        _, data = event_data("message-complete", payloads.MessageComplete(message=views.message(MessageRow(**message))))
        done = await outbox.commit_turn(conn, did, job.step_key, retry, message, data, next_job.model_dump())
        return ([done], next_job) if done is not None else None

    return quick


async def run(host: StepHost, job: DialogueJob, lo: Loaded, num_delivered: int) -> tuple[Build, QuickCommit | None]:
    spoken = await _speak(host, job, lo, num_delivered)
    if job.position >= len(lo.personas):  # the round's last turn: what follows depends on the whole round
        return _build(host, job, spoken), None
    return _build(host, job, spoken), _quick(job, spoken)
