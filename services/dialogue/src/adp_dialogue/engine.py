"""Durable discussion steps: one DialogueJob per step on the DIALOGUE_WORK work queue.

A step runs its LLM call, then commits its result, its events (with per-discussion seqs) and the next job in
one transaction; only then are the events and the next job published and the job acked. A redelivered step
that was already committed re-publishes the same events and next job (de-duplicated by Nats-Msg-Id); one that
was not is re-run from scratch (the partial message is discarded; clients get `message-start` with restart).
Each step kind lives in its own module under `adp_dialogue.steps`; this module dispatches, commits and fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adp_common.bus import Bus, Delivery, Reject
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import TERMINAL_EVENTS, DialogueJob, DiscussionEvent
from adp_common.schemas.events import event_data
from adp_common.schemas.llm import CancelCalls
from adp_dialogue import outbox, store
from adp_dialogue.domain import resolution
from adp_dialogue.domain.personas import USER_PERSONA
from adp_dialogue.rows import DiscussionRow
from adp_dialogue.settings import DialogueSettings
from adp_dialogue.steps import RUNNERS
from adp_dialogue.steps.common import (
    Build,
    EventList,
    QuickCommit,
    final_job,
    job_msg_id,
    loaded,
    questions_job,
    summary_job,
    turn_job,
)
from adp_dialogue.steps.llm_calls import StepCalls

log = logging.getLogger("adp.dialogue.engine")

LLM_ERRORS = {
    ErrorCode.LLM_PROVIDER_ERROR,
    ErrorCode.LLM_TIMEOUT,
    ErrorCode.NO_LLM_PROVIDER_AVAILABLE,
    ErrorCode.BUDGET_EXCEEDED,
}


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


class Engine:
    def __init__(self, settings: DialogueSettings, bus: Bus, pool: asyncpg.Pool, metrics: Metrics) -> None:
        self.s = settings
        self.bus = bus
        self.pool = pool
        self.metrics = metrics
        self.calls = StepCalls(settings, bus)
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
            if row is not None and row.step_done:
                await self._republish(conn, did, job.step_key, row.step_next_job)
                return
        loaded_step = loaded(row) if row is not None else None
        if loaded_step is None or not self._is_current(loaded_step.d, job):
            log.info("dropping stale step %s of %s", job.step_key, did)
            return
        started = time.perf_counter()
        log.info("running step %s of %s (delivery %d)", job.step_key, did, delivery.num_delivered)
        try:
            runner = RUNNERS.get(job.kind)
            if runner is None:
                raise Reject(f"unknown step kind {job.kind}")
            commit_fn, quick = await runner(self, job, loaded_step, delivery.num_delivered)
        except PlatformError as err:
            if err.code == ErrorCode.CONFLICT:  # the router cancelled the call: the discussion was stopped
                log.info("step %s of %s ended: %s", job.step_key, did, err.message)
                return
            if err.code not in LLM_ERRORS and err.code != ErrorCode.SERVICE_UNAVAILABLE:
                raise
            self.metrics.failed.labels(job.kind, err.code.value).inc()
            await self._fail(job, err)
            return
        await self._commit(
            job, commit_fn, context=self._commit_needs_context(job, len(loaded_step.personas)), quick=quick
        )
        self.metrics.steps.labels(job.kind).inc()
        self.metrics.duration.labels(job.kind).observe(time.perf_counter() - started)

    @staticmethod
    def _is_current(d: DiscussionRow, job: DialogueJob) -> bool:
        current = d.current_job or {}
        return (
            d.status == "running"
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
        await self.publish_events(await outbox.events_for_step(conn, did, step_key), job)

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
            if d is not None and d.step_done:  # another copy committed it meanwhile
                nj = d.step_next_job
                return await outbox.events_for_step(conn, did, job.step_key), (
                    DialogueJob.model_validate(nj) if nj else None
                )
            if d is None or not self._is_current(d.discussion, job):
                return None
            c = await build(conn, loaded(d))
            next_job = c.next_job
            updates = dict(c.updates)
            updates["current_job"] = next_job.model_dump() if next_job else None
            if next_job is None and "status" not in updates:
                updates["status"] = "waiting"
            published = await outbox.finish_step(
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
                events = await outbox.add_events(conn, did, f"{job.step_key}:error:{retry}", failed)
        log.warning("step %s of %s failed: %s %s", job.step_key, did, err.code.value, err.message)
        await self.publish_events(events)

    # ---- sweeper --------------------------------------------------------------------------------------
    async def sweep_once(self) -> int:
        """Re-publish the current job of discussions 'running' with no progress (de-duplicated by msg id)."""
        async with self.pool.acquire() as conn:
            rows = await store.stalled_running(conn, self.s.stall_after_s)
            self.metrics.active.set(await store.count_active(conn))
        n = 0
        for did, job in rows:
            if job:
                await self.publish_job(DialogueJob.model_validate(job))
                async with self.pool.acquire() as conn:
                    await store.touch(conn, did)
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


__all__ = [
    "USER_PERSONA",
    "Engine",
    "Metrics",
    "final_job",
    "job_msg_id",
    "questions_job",
    "summary_job",
    "turn_job",
]
