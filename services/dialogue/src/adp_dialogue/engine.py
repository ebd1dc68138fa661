"""Durable discussion steps: one DialogueJob per step on the DIALOGUE_WORK work queue.

A step runs its LLM call, then commits its result, its events (with per-discussion seqs) and the next job in
one transaction; only then are the events and the next job published and the job acked. A redelivered step
that was already committed re-publishes the same events and next job (de-duplicated by Nats-Msg-Id); one that
was not is re-run from scratch (the partial message is discarded; clients get `message-start` with restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adp_common.bus import Bus, Delivery, Reject
from adp_common.errors import ErrorCode, PlatformError
from adp_common.llm_client import LLMClient
from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import TERMINAL_EVENTS, DialogueJob, DiscussionEvent, PersonaSpec
from adp_common.schemas.events import event_data
from adp_common.schemas.llm import CancelCalls, ChatMessage, CompletionRequest
from adp_dialogue import store, views
from adp_dialogue.domain import flow, policy, prompts, questions, resolution
from adp_dialogue.domain.personas import USER_PERSONA, turn_number, turn_step_key, user_turns_up_to
from adp_dialogue.domain.text import estimate_tokens
from adp_dialogue.settings import DialogueSettings

log = logging.getLogger("adp.dialogue.engine")

LLM_ERRORS = {
    ErrorCode.LLM_PROVIDER_ERROR,
    ErrorCode.LLM_TIMEOUT,
    ErrorCode.NO_LLM_PROVIDER_AVAILABLE,
    ErrorCode.BUDGET_EXCEEDED,
}
EventList = list[tuple[str, dict[str, Any]]]


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge("adp_dialogue_active_discussions", "Unresolved discussions", registry=registry)
        self.steps = Counter("adp_dialogue_steps_processed", "Steps committed", ["kind"], registry=registry)
        self.failed = Counter("adp_dialogue_steps_failed", "Steps that failed", ["kind", "code"], registry=registry)
        self.duration = Histogram(
            "adp_dialogue_step_duration_seconds",
            "Duration of a step",
            ["kind"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
            registry=registry,
        )


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
    d: asyncpg.Record
    personas: list[PersonaSpec]
    messages: list[prompts.Msg]
    summary: prompts.SummaryRef | None
    files: list[prompts.FileText]
    question_rounds: set[int]

    def context(self) -> prompts.Context:
        return prompts.Context(
            topic=self.d["topic"],
            personas=self.personas,
            messages=self.messages,
            summary=self.summary,
            files=self.files,
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


class Engine:
    def __init__(self, settings: DialogueSettings, bus: Bus, pool: asyncpg.Pool, metrics: Metrics) -> None:
        self.s = settings
        self.bus = bus
        self.pool = pool
        self.metrics = metrics
        self.llm = LLMClient(bus)
        self.resolution_cfg = resolution.ResolutionConfig(min_round=settings.resolution_min_round)
        # Test hook: awaited after a step's commit and before its publications (simulates a crash there).
        self.after_commit_hook: Callable[[DialogueJob], Awaitable[None]] | None = None

    # ---- publishing -----------------------------------------------------------------------------------
    async def publish_event(self, ev: DiscussionEvent) -> None:
        """One discussion event on JetStream, de-duplicated by (discussion, seq)."""
        await self.bus.publish_event(
            self.bus.catalog.discussion_events(ev.discussionId), ev, msg_id=f"{ev.discussionId}:{ev.seq}"
        )

    async def publish_events(self, events: list[DiscussionEvent], job: DialogueJob | None = None) -> None:
        """Events, then the follow-up job if any: issued in that order on one connection (so stored and
        delivered in order), their acknowledgements awaited together — one round trip for a step's outcome."""
        pubs = [self.publish_event(ev) for ev in events]
        if job is not None:
            pubs.append(self.publish_job(job))
        await asyncio.gather(*pubs)

    async def cancel_calls(self, did: str, reason: str) -> None:
        """Ask every router copy to cancel this discussion's in-flight LLM calls (best effort)."""
        await self.bus.notify(self.bus.catalog.llm_cancel, CancelCalls(discussion_id=did, reason=reason))

    async def publish_job(self, job: DialogueJob) -> None:
        await self.bus.publish_event(self.bus.catalog.dialogue_work(job.discussion_id), job, msg_id=job_msg_id(job))

    # ---- the consumer handler -------------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        job = delivery.payload
        if not isinstance(job, DialogueJob):
            raise Reject(f"not a DialogueJob: {type(job).__name__}")
        did = job.discussion_id
        async with self.pool.acquire() as conn:
            row = await store.load_step(conn, did, job.step_key)
            if row is not None and row["step_done"]:
                await self._republish(conn, did, job.step_key, store.loads(row["step_next_job"]))
                return
        loaded = self._loaded(row) if row is not None else None
        if loaded is None or not self._is_current(loaded.d, job):
            log.info("dropping stale step %s of %s", job.step_key, did)
            return
        started = time.perf_counter()
        log.info("running step %s of %s (delivery %d)", job.step_key, did, delivery.num_delivered)
        quick: QuickCommit | None = None
        try:
            if job.kind == "turn":
                commit_fn, quick = await self._run_turn(job, loaded, delivery.num_delivered)
            elif job.kind == "summary":
                commit_fn = await self._run_summary(job, loaded, delivery.num_delivered)
            elif job.kind == "questions":
                commit_fn = await self._run_questions(job, loaded, delivery.num_delivered)
            elif job.kind == "final":
                commit_fn = await self._run_final(job, loaded, delivery.num_delivered)
            else:
                raise Reject(f"unknown step kind {job.kind}")
        except PlatformError as err:
            if err.code == ErrorCode.CONFLICT:  # the router cancelled the call: the discussion was stopped
                log.info("step %s of %s ended: %s", job.step_key, did, err.message)
                return
            if err.code not in LLM_ERRORS and err.code != ErrorCode.SERVICE_UNAVAILABLE:
                raise
            self.metrics.failed.labels(job.kind, err.code.value).inc()
            await self._fail(job, err)
            return
        await self._commit(job, commit_fn, context=self._commit_needs_context(job, len(loaded.personas)), quick=quick)
        self.metrics.steps.labels(job.kind).inc()
        self.metrics.duration.labels(job.kind).observe(time.perf_counter() - started)

    @staticmethod
    def _is_current(d: asyncpg.Record, job: DialogueJob) -> bool:
        current = store.loads(d["current_job"]) or {}
        return (
            d["status"] == "running"
            and current.get("step_key") == job.step_key
            and (current.get("data") or {}).get("retry", 0) == job.data.get("retry", 0)
        )

    @staticmethod
    def _commit_needs_context(job: DialogueJob, persona_count: int) -> bool:
        """Whether a step's commit reads the prompt context (every message so far) again: a turn before the
        round's last commits its message with the discussion row alone; a round's end, a summary, questions
        and the final answer decide what comes next from the whole discussion. (The cast is fixed when the
        discussion is created, so the count read when the step began still holds at its commit.)"""
        return job.kind != "turn" or job.position >= persona_count

    async def _republish(self, conn: store.Conn, did: str, step_key: str, next_job: dict[str, Any] | None) -> None:
        job = DialogueJob.model_validate(next_job) if next_job else None
        await self.publish_events(await store.events_for_step(conn, did, step_key), job)

    @staticmethod
    def _loaded(row: asyncpg.Record) -> Loaded:
        """A step's view of its discussion from `store.load_step`."""
        latest = store.loads(row["ctx_summary"])
        return Loaded(
            d=row,
            personas=[PersonaSpec(**p) for p in store.loads(row["personas"])],
            messages=[
                prompts.Msg(persona=m["persona"], content=m["content"], round=m["round"], turn=m["turn"])
                for m in store.loads(row["ctx_messages"])
            ],
            summary=prompts.SummaryRef(latest["round"], latest["content"]) if latest else None,
            files=[prompts.FileText(f["name"], f["text"]) for f in store.loads(row["ctx_files"])],
            question_rounds=set(row["ctx_question_rounds"]),
        )

    async def _commit(
        self,
        job: DialogueJob,
        build: Build,
        *,
        context: bool = True,
        quick: QuickCommit | None = None,
    ) -> None:
        """Lock the discussion, check the step is still due, then store what `build` decides. Without
        `context` the lock reads the row alone (see `_commit_needs_context`). `quick`, when given, is tried
        first: a single statement that commits only if the step is still due (the general path is then
        needed only to tell apart why not)."""
        async with self.pool.acquire() as conn:
            done = await quick(conn) if quick is not None else None
            if done is None:
                done = await self._commit_locked(conn, job, build, context)
        if done is None:  # no longer due (stopped, paused, superseded): nothing to publish
            return
        if self.after_commit_hook is not None:
            await self.after_commit_hook(job)
        await self.publish_events(*done)

    async def _commit_locked(
        self,
        conn: store.Conn,
        job: DialogueJob,
        build: Build,
        context: bool,
    ) -> tuple[list[DiscussionEvent], DialogueJob | None] | None:
        """The general commit, in a transaction holding the discussion's row lock: what to publish, or None
        when the step is no longer due."""
        did = job.discussion_id
        async with conn.transaction():
            d = await store.load_step(conn, did, job.step_key, for_update=True, context=context)
            if d is not None and d["step_done"]:  # another copy committed it meanwhile
                nj = store.loads(d["step_next_job"])
                return await store.events_for_step(conn, did, job.step_key), (
                    DialogueJob.model_validate(nj) if nj else None
                )
            if d is None or not self._is_current(d, job):
                return None
            c = await build(conn, self._loaded(d))
            next_job = c.next_job
            updates = dict(c.updates)
            updates["current_job"] = next_job.model_dump() if next_job else None
            if next_job is None and "status" not in updates:
                updates["status"] = "waiting"
            published = await store.finish_step(
                conn, did, job.step_key, c.events, updates, next_job.model_dump() if next_job else None
            )
            return published, next_job

    async def _fail(self, job: DialogueJob, err: PlatformError) -> None:
        did = job.discussion_id
        retry = job.data.get("retry", 0)
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                d = await store.get_discussion(conn, did, for_update=True)
                if d is None or not self._is_current(d, job):
                    return
                error = {"code": err.code.value, "message": err.message, "step": job.step_key, "retry": retry}
                failed: EventList = [
                    event_data("error", payloads.ErrorPayload(message=err.message, code=err.code.value))
                ]
                if retry + 1 >= self.s.max_step_attempts:  # retried enough: the discussion ends here
                    await store.update_discussion(conn, did, status="failed", error=error, current_job=None)
                    failed.append(event_data(TERMINAL_EVENTS["failed"], payloads.DiscussionFailed(**error)))
                else:
                    await store.update_discussion(conn, did, status="waiting", error=error)
                events = await store.add_events(conn, did, f"{job.step_key}:error:{retry}", failed)
        log.warning("step %s of %s failed: %s %s", job.step_key, did, err.code.value, err.message)
        await self.publish_events(events)

    # ---- LLM calls ------------------------------------------------------------------------------------
    def _request(
        self,
        job: DialogueJob,
        d: asyncpg.Record,
        num_delivered: int,
        messages: list[ChatMessage],
        *,
        route: str,
        persona: str,
        task: str,
        n: int = 0,
        max_tokens: int | None = None,
    ) -> CompletionRequest:
        retry = job.data.get("retry", 0)
        suffix = f":c{n}" if n else ""
        return CompletionRequest(
            request_id=f"{d['id']}:{job.step_key}:{retry}.{num_delivered}{suffix}",
            # the same for every delivery of the step: a redelivered step gets the first one's answer
            call_key=f"{d['id']}:{job.step_key}:{retry}:{task}{suffix}",
            messages=messages,
            route=route,
            persona=persona,
            user_id=d["user_id"],
            key_id=d.get("key_id"),
            discussion_id=d["id"],
            task=task,
            round=job.round,
            max_tokens=max_tokens,
            timeout_s=self.s.llm_timeout_s,
        )

    async def _complete_full(
        self,
        job: DialogueJob,
        d: asyncpg.Record,
        num_delivered: int,
        base: list[ChatMessage],
        *,
        route: str,
        persona: str,
        task: str,
        chunk_data: dict[str, Any] | None = None,
    ) -> tuple[str, str, str, int, int]:
        """One answer, continued (task 'continue') while it is cut off. -> text, provider, model, in, out.

        With `chunk_data` the answer streams live: the router publishes each chunk straight to the
        discussion's chunk subject as a `message-chunk` event carrying `chunk_data` (no hop through here)."""
        relay: dict[str, Any] = {}
        if chunk_data is not None:
            template = DiscussionEvent(discussionId=d["id"], seq=0, event="message-chunk", data=chunk_data)
            relay = {
                "relay_subject": self.bus.catalog.discussion_chunks(d["id"]),
                "relay_template": template.model_dump(mode="json"),
            }
        req = self._request(
            job, d, num_delivered, base, route=route, persona=persona, task=task, max_tokens=self.s.turn_max_tokens
        ).model_copy(update=relay)
        res = await self.llm.complete(req)
        text, tin, tout = res.text, res.usage.input_tokens, res.usage.output_tokens
        n = 0
        while policy.needs_continuation(text, res.finish_reason) and n < self.s.max_continuations:
            n += 1
            req = self._request(
                job,
                d,
                num_delivered,
                prompts.continue_messages(base, text),
                route=route,
                persona=persona,
                task="continue",
                n=n,
                max_tokens=self.s.turn_max_tokens,
            ).model_copy(update=relay)
            res = await self.llm.complete(req)
            text = policy.join_continuation(text, res.text)
            tin += res.usage.input_tokens
            tout += res.usage.output_tokens
        return text.strip(), res.provider, res.model, tin, tout or estimate_tokens(text)

    # ---- steps ----------------------------------------------------------------------------------------
    async def _run_turn(self, job: DialogueJob, lo: Loaded, num_delivered: int) -> tuple[Build, QuickCommit | None]:
        d = lo.d
        did = d["id"]
        persona = lo.personas[job.position - 1]
        user_rounds = [m.round for m in lo.messages if m.persona == USER_PERSONA]
        turn = turn_number(job.round, job.position, len(lo.personas), user_turns_up_to(job.round, user_rounds))
        async with self.pool.acquire() as conn:
            _, data = event_data(
                "message-start", payloads.MessageStart(persona=persona.name, turn=turn, round=job.round)
            )
            data.pop("restart")  # set by the store when the turn is re-run
            start = await store.add_start_event(conn, did, f"{job.step_key}:start", "message-start", data)
        # message-start and the LLM request leave on the same NATS connection in that order, so every live
        # listener has message-start before the router can even see the request; its JetStream ack is
        # awaited alongside the call rather than before it (one round trip off the time to first chunk).
        # Both tasks are started back to back and each queues its message before its first suspension, so
        # on the next turn of the event loop the two are queued in order and leave in one socket write
        # (the prompt is built first: a busy loop's turn between the two would delay the call).
        base = prompts.turn_messages(lo.context(), job.position - 1, job.round)
        chunk_data = {"persona": persona.name, "turn": turn, "round": job.round}
        ack = asyncio.ensure_future(self.publish_event(start))
        call = asyncio.ensure_future(
            self._complete_full(
                job,
                d,
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

        async def build(conn: store.Conn, now: Loaded) -> Commit:
            row = await store.insert_message(
                conn,
                id=uuid.uuid4().hex,
                discussion_id=did,
                persona=persona.name,
                content=text,
                round=job.round,
                turn=turn,
                position=job.position,
                provider=provider,
                model=model,
                input_tokens=tin,
                output_tokens=tout,
            )
            events: EventList = []
            msg = views.message(row) if row else None
            if msg:
                events.append(event_data("message-complete", payloads.MessageComplete(message=msg)))
            tokens = now.d["token_count"] + tout
            updates: dict[str, Any] = {"token_count": tokens}
            if job.position < len(now.personas):
                return Commit(events, turn_job(did, job.round, job.position + 1), updates)
            await store.insert_round(conn, did, job.round, tokens)
            msgs = [m for m in now.messages if not (m.round == job.round and m.turn == turn)]
            if msg:
                msgs.append(prompts.Msg(persona.name, text, job.round, turn))
            round_msgs = [views.message(r) for r in await store.messages(conn, did) if r["round"] == job.round]
            info = payloads.RoundInfo(number=job.round, messages=round_msgs)
            events.append(event_data("round-complete", payloads.RoundComplete(round=info)))
            return self._after_round(now, job.round, tokens, msgs, events, updates, summary_done=False)

        if job.position >= len(lo.personas):  # the round's last turn: what follows depends on the whole round
            return build, None

        async def quick(conn: store.Conn) -> tuple[list[DiscussionEvent], DialogueJob | None] | None:
            # A turn before the round's last needs neither the context nor the row's values: one statement
            # (store.commit_turn) instead of a transaction of five round trips.
            message = {
                "id": uuid.uuid4().hex,
                "persona": persona.name,
                "content": text,
                "round": job.round,
                "turn": turn,
                "position": job.position,
                "provider": provider,
                "model": model,
                "input_tokens": tin,
                "output_tokens": tout,
                "created_at": datetime.now(UTC),
            }
            next_job = turn_job(did, job.round, job.position + 1)
            retry = job.data.get("retry", 0)
            _, data = event_data("message-complete", payloads.MessageComplete(message=views.message(message)))
            done = await store.commit_turn(conn, did, job.step_key, retry, message, data, next_job.model_dump())
            return ([done], next_job) if done is not None else None

        return build, quick

    def _after_round(
        self,
        lo: Loaded,
        round_number: int,
        tokens: int,
        msgs: list[prompts.Msg],
        events: EventList,
        updates: dict[str, Any],
        *,
        summary_done: bool,
    ) -> Commit:
        did = lo.d["id"]
        state = flow.RoundState(
            topic=lo.d["topic"],
            personas=[p.name for p in lo.personas],
            round=round_number,
            max_rounds=lo.d["max_rounds"],
            token_count=tokens,
            token_limit=lo.d["token_limit"],
            last_summary_round=lo.summary.round if lo.summary else 0,
            auto_mode=lo.d["auto_mode"],
            has_question_set=round_number in lo.question_rounds,
            messages=msgs,
        )
        dec = flow.after_round(
            state, summary_done=summary_done, auto_questions=self.s.auto_questions, resolution=self.resolution_cfg
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

    async def _run_summary(self, job: DialogueJob, lo: Loaded, num_delivered: int):
        d = lo.d
        did = d["id"]
        base = prompts.summary_messages(lo.context(), job.round)
        text, *_ = await self._complete_full(
            job, d, num_delivered, base, route="moderator", persona="Moderator", task="summary"
        )

        async def build(conn: store.Conn, now: Loaded) -> Commit:
            before = now.d["token_count"]
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
                return self._after_round(now, job.round, after, now.messages, events, updates, summary_done=True)
            return Commit(events, None, updates)

        return build

    async def _run_questions(self, job: DialogueJob, lo: Loaded, num_delivered: int):
        d = lo.d
        did = d["id"]
        base = prompts.questions_messages(lo.context(), job.round)
        req = self._request(job, d, num_delivered, base, route="moderator", persona="Moderator", task="questions")
        res = await self.llm.complete(req)
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
                qset = payloads.QuestionSet(id=row["id"], roundNumber=job.round, questions=qs)
                events.append(
                    event_data(
                        "questions-generated", payloads.QuestionsGenerated(questionSet=qset, roundNumber=job.round)
                    )
                )
            return Commit(events, None, {})

        return build

    async def _run_final(self, job: DialogueJob, lo: Loaded, num_delivered: int):
        d = lo.d
        solution = job.data.get("solution") or ""
        base = prompts.final_messages(lo.context(), solution)
        text, *_ = await self._complete_full(
            job, d, num_delivered, base, route="moderator", persona="Moderator", task="final"
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

        return build

    # ---- sweeper --------------------------------------------------------------------------------------
    async def sweep_once(self) -> int:
        """Re-publish the current job of discussions 'running' with no progress (de-duplicated by msg id)."""
        async with self.pool.acquire() as conn:
            rows = await store.stalled_running(conn, self.s.stall_after_s)
            self.metrics.active.set(await store.count_active(conn))
        n = 0
        for r in rows:
            job = store.loads(r["current_job"])
            if job:
                await self.publish_job(DialogueJob.model_validate(job))
                async with self.pool.acquire() as conn:
                    await store.touch(conn, r["id"])
                n += 1
        return n

    async def sweeper(self) -> None:
        while True:
            try:
                republished = await self.sweep_once()
                if republished:
                    log.warning("re-published %d stalled steps", republished)
            except Exception as err:
                log.warning("sweep failed: %s", err)
            await asyncio.sleep(self.s.sweep_interval_s)


__all__ = ["USER_PERSONA", "Engine", "Metrics", "turn_job"]
