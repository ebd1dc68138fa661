"""Commands and queries from the gateway (request/reply over the bus)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import asyncpg

from adp_common.bus import RequestContext
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas import events as payloads
from adp_common.schemas.dialogue import (
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    AnswersCommand,
    CountReply,
    CreateCommand,
    DialogueCommand,
    DialogueJob,
    DialogueQuery,
    DiscussionEvent,
    DiscussionList,
    DiscussionView,
    EventsReply,
    ExportReply,
    InputCommand,
    ProceedCommand,
    QuestionsCommand,
    StopCommand,
    SummaryCommand,
)
from adp_common.schemas.events import event_data
from adp_dialogue import outbox, store, views
from adp_dialogue.domain import questions
from adp_dialogue.domain.export import to_markdown
from adp_dialogue.domain.personas import USER_PERSONA, normalise_personas, user_turn_number
from adp_dialogue.domain.text import estimate_tokens
from adp_dialogue.engine import Engine, questions_job, summary_job, turn_job
from adp_dialogue.rows import DiscussionRow, MessageRow
from adp_dialogue.settings import DialogueSettings

log = logging.getLogger("adp.dialogue.commands")

TOPIC_MIN, TOPIC_MAX = 10, 1000
TERMINAL = TERMINAL_STATUSES


def parse_id(raw: str | None) -> str:
    """A discussion id (uuid, hex or dashed) in canonical hex form; INVALID_DISCUSSION_ID otherwise."""
    try:
        return uuid.UUID(str(raw or "").strip()).hex
    except ValueError:
        raise PlatformError(ErrorCode.INVALID_DISCUSSION_ID, "invalid discussion id") from None


async def has_active(conn: store.Conn, d: DiscussionRow) -> bool:
    """Whether the discussion's user has an unfinished discussion: this one, or (one query) another."""
    if d.status in store.ACTIVE_STATUSES:
        return True
    return await store.count_active(conn, d.user_id) > 0


class Commands:
    def __init__(self, settings: DialogueSettings, pool: asyncpg.Pool, engine: Engine) -> None:
        self.s = settings
        self.pool = pool
        self.engine = engine

    # ---- dispatch -------------------------------------------------------------------------------------
    async def command(self, request: DialogueCommand, _: RequestContext | None = None) -> DiscussionView:
        cmd = request.root
        if not cmd.user_id.strip():
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "user_id is required")
        if isinstance(cmd, CreateCommand):
            return await self.create(cmd)
        did = parse_id(cmd.discussion_id)
        if isinstance(cmd, ProceedCommand):
            return await self.proceed(cmd, did)
        if isinstance(cmd, AnswersCommand):
            return await self.answers(cmd, did)
        if isinstance(cmd, InputCommand):
            return await self.user_input(cmd, did)
        if isinstance(cmd, QuestionsCommand | SummaryCommand):
            return await self._side_step(cmd, did)
        return await self.stop(cmd, did)

    async def query(self, q: DialogueQuery, _: RequestContext | None = None) -> Any:
        async with self.pool.acquire() as conn:
            if q.kind == "active_count":
                return CountReply(count=await store.count_active(conn, q.user_id))
            if not q.user_id:
                raise PlatformError(ErrorCode.VALIDATION_ERROR, "user_id is required")
            if q.kind == "list":
                rows = await store.list_discussions(conn, q.user_id)
                active = any(r.status in store.ACTIVE_STATUSES for r in rows)
                return DiscussionList(discussions=[views.base_view(r, has_active=active) for r in rows])
            did = parse_id(q.discussion_id)
            if q.kind == "head":
                d = await self._owned(conn, did, q.user_id)
                return views.base_view(d, has_active=await has_active(conn, d))
            if q.kind == "events":
                events = await outbox.owned_events_after(conn, did, q.user_id, q.after_seq)
                if events is None:  # never reveal another user's discussion
                    raise PlatformError(ErrorCode.DISCUSSION_NOT_FOUND, "discussion not found")
                return EventsReply(events=events)
            detail = await store.discussion_with_children(conn, did)
            if detail is None or detail.discussion.user_id != q.user_id:  # never reveal another user's discussion
                raise PlatformError(ErrorCode.DISCUSSION_NOT_FOUND, "discussion not found")
            view = views.full_view(detail, has_active=await has_active(conn, detail.discussion))
        if q.kind == "get":
            return view
        if q.format == "markdown":
            return ExportReply(format="markdown", content=to_markdown(view.model_dump(mode="json")))
        return ExportReply(format="json", content=json.dumps(view.model_dump(mode="json"), indent=2))

    # ---- helpers --------------------------------------------------------------------------------------
    @staticmethod
    async def _owned(conn: store.Conn, did: str, user_id: str, *, for_update: bool = False) -> DiscussionRow:
        d = await store.get_discussion(conn, did, for_update=for_update)
        if d is None or d.user_id != user_id:  # never reveal another user's discussion
            raise PlatformError(ErrorCode.DISCUSSION_NOT_FOUND, "discussion not found")
        return d

    @staticmethod
    def _require_waiting(d: DiscussionRow, *, allow_error: bool = False) -> None:
        if d.status == "running":
            raise PlatformError(ErrorCode.CONFLICT, "a step is running; wait for the round to finish")
        if d.status in TERMINAL:
            raise PlatformError(ErrorCode.CONFLICT, f"the discussion is {d.status}")
        if d.error is not None and not allow_error:
            raise PlatformError(ErrorCode.CONFLICT, "the last step failed; proceed retries it")

    async def _after_commit(self, events: list[DiscussionEvent], job: DialogueJob | None) -> None:
        """Publish after the commit. If this fails the sweeper re-publishes the job of a stalled discussion."""
        try:
            await self.engine.publish_events(events, job)
        except Exception as err:
            log.warning("publishing after commit failed (the sweeper will retry the job): %s", err)

    async def _publish_and_view(
        self, did: str, events: list[DiscussionEvent], job: DialogueJob | None
    ) -> DiscussionView:
        """After a command's commit: its publications and the answer's view, side by side (the view reads
        the committed state, so it need not wait for JetStream's acknowledgements)."""
        _, view = await asyncio.gather(self._after_commit(events, job), self._view(did))
        return view

    async def _view(self, did: str) -> DiscussionView:
        async with self.pool.acquire() as conn:
            detail = await store.discussion_with_children(conn, did)
            assert detail is not None
            return views.full_view(detail, has_active=await has_active(conn, detail.discussion))

    async def _start_round(
        self, conn: store.Conn, d: DiscussionRow, events: list[tuple[str, dict[str, Any]]], extra_tokens: int = 0
    ) -> tuple[list[DiscussionEvent], DialogueJob]:
        nxt = d.current_round + 1
        if nxt > d.max_rounds:
            raise PlatformError(ErrorCode.CONFLICT, f"the discussion reached its maximum of {d.max_rounds} rounds")
        job = turn_job(d.id, nxt, 1)
        stored = await outbox.add_events(conn, d.id, None, events)
        await store.update_discussion(
            conn,
            d.id,
            status="running",
            current_round=nxt,
            current_job=job.model_dump(),
            error=None,
            token_count=d.token_count + extra_tokens,
        )
        return stored, job

    async def _user_message(self, conn: store.Conn, d: DiscussionRow, content: str) -> MessageRow:
        personas = d.personas
        rnd = d.current_round + 1
        earlier = await store.count_messages_of(conn, d.id, USER_PERSONA)
        row = await store.insert_message(
            conn,
            id=uuid.uuid4().hex,
            discussion_id=d.id,
            persona=USER_PERSONA,
            content=content,
            round=rnd,
            turn=user_turn_number(rnd, len(personas), earlier),
            position=0,
            provider=None,
            model=None,
            input_tokens=0,
            output_tokens=0,  # the user wrote it: no model produced (or was paid for) these tokens
        )
        if row is None:
            raise PlatformError(ErrorCode.CONFLICT, "the user already spoke before this round")
        return row

    # ---- commands -------------------------------------------------------------------------------------
    async def create(self, cmd: CreateCommand) -> DiscussionView:
        topic = (cmd.topic or "").strip()
        if not TOPIC_MIN <= len(topic) <= TOPIC_MAX:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, f"topic must be {TOPIC_MIN} to {TOPIC_MAX} characters long")
        try:
            personas = normalise_personas(cmd.personas)
        except ValueError as err:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, str(err)) from None
        max_rounds = cmd.max_rounds or self.s.default_max_rounds
        did = uuid.uuid4().hex
        job = turn_job(did, 1, 1)
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await store.lock_user(conn, cmd.user_id)
                active = await store.count_active(conn, cmd.user_id)
                if active >= self.s.max_active_discussions:
                    raise PlatformError(
                        ErrorCode.ACTIVE_DISCUSSION_LIMIT,
                        f"hasActiveDiscussion: you already have {active} unresolved discussion(s); "
                        f"the limit is {self.s.max_active_discussions}. Finish or stop one first.",
                    )
                row = await store.create_discussion(
                    conn,
                    id=did,
                    user_id=cmd.user_id,
                    key_id=cmd.key_id,
                    topic=topic,
                    personas=[p.model_dump() for p in personas],
                    max_rounds=max_rounds,
                    auto_mode=cmd.auto,
                    token_limit=self.s.token_limit,
                    status="running",
                    current_round=1,
                    current_job=job.model_dump(),
                )
                for f in cmd.files:
                    await store.add_file(
                        conn,
                        id=f.id or uuid.uuid4().hex,
                        discussion_id=did,
                        name=f.name,
                        content_type=f.content_type,
                        size=f.size,
                        text=f.text,
                    )
                events = await outbox.add_events(
                    conn,
                    did,
                    None,
                    [
                        event_data(
                            "discussion-started",
                            payloads.DiscussionStarted(topic=topic, personas=personas, maxRounds=max_rounds),
                        )
                    ],
                )
        await self._after_commit(events, job)
        # The discussion as created (no messages, rounds, summaries or questions yet): no re-read needed.
        return views.base_view(row, has_active=True)

    async def proceed(self, cmd: ProceedCommand, did: str) -> DiscussionView:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                d = await self._owned(conn, did, cmd.user_id, for_update=True)
                self._require_waiting(d, allow_error=True)
                failed = d.current_job if d.error is not None else None
                if failed:
                    job = DialogueJob.model_validate(failed)
                    job.data = {**job.data, "retry": int(job.data.get("retry", 0)) + 1}
                    await store.update_discussion(conn, did, status="running", error=None, current_job=job.model_dump())
                    events: list[DiscussionEvent] = []
                else:
                    events, job = await self._start_round(conn, d, [])
        return await self._publish_and_view(did, events, job)

    async def answers(self, cmd: AnswersCommand, did: str) -> DiscussionView:
        if not cmd.answers:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "answers are required: {questionId: [optionId]}")
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                d = await self._owned(conn, did, cmd.user_id, for_update=True)
                self._require_waiting(d)
                rnd = cmd.round_number or d.current_round
                qs = await store.question_set(conn, did, rnd)
                if qs is None:
                    raise PlatformError(ErrorCode.VALIDATION_ERROR, f"no questions were generated for round {rnd}")
                if qs.answers is not None:
                    raise PlatformError(ErrorCode.CONFLICT, f"the questions of round {rnd} were already answered")
                items = qs.questions
                problems = questions.validate_answers(items, cmd.answers)
                if problems:
                    raise PlatformError(ErrorCode.VALIDATION_ERROR, "; ".join(problems))
                await store.answer_question_set(conn, qs.id, cmd.answers)
                row = await self._user_message(conn, d, questions.answers_text(items, cmd.answers))
                events, job = await self._start_round(
                    conn,
                    d,
                    [event_data("message-complete", payloads.MessageComplete(message=views.message(row)))],
                    estimate_tokens(row.content),
                )
        return await self._publish_and_view(did, events, job)

    async def user_input(self, cmd: InputCommand, did: str) -> DiscussionView:
        text = (cmd.input or "").strip()
        if not text:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "input must not be empty")
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                d = await self._owned(conn, did, cmd.user_id, for_update=True)
                self._require_waiting(d)
                row = await self._user_message(conn, d, text)
                events, job = await self._start_round(
                    conn,
                    d,
                    [event_data("message-complete", payloads.MessageComplete(message=views.message(row)))],
                    estimate_tokens(row.content),
                )
        return await self._publish_and_view(did, events, job)

    async def _side_step(self, cmd: QuestionsCommand | SummaryCommand, did: str) -> DiscussionView:
        kind = cmd.action
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                d = await self._owned(conn, did, cmd.user_id, for_update=True)
                self._require_waiting(d)
                rnd = d.current_round
                if kind == "questions":
                    if await store.question_set(conn, did, rnd) is not None:
                        raise PlatformError(ErrorCode.CONFLICT, f"questions were already generated for round {rnd}")
                    job = questions_job(did, rnd, "requested")
                else:
                    if any(s.round == rnd for s in await store.summaries(conn, did)):
                        raise PlatformError(ErrorCode.CONFLICT, f"round {rnd} is already summarised")
                    job = summary_job(did, rnd, "wait", "requested")
                await store.update_discussion(conn, did, status="running", current_job=job.model_dump())
        return await self._publish_and_view(did, [], job)

    async def stop(self, cmd: StopCommand, did: str) -> DiscussionView:
        events: list[DiscussionEvent] = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                stopped = await store.stop_discussion(conn, did, cmd.user_id, TERMINAL)
                if stopped is None:
                    await self._owned(conn, did, cmd.user_id)  # 404 unless it exists and was already over
                else:
                    end = event_data(TERMINAL_EVENTS["stopped"], payloads.DiscussionStopped(round=stopped))
                    events = await outbox.add_events(conn, did, None, [end])
        if stopped is not None:
            await self._after_commit(events, None)
            # The answer being generated is no longer wanted: the router copy running it cuts the provider
            # call (tokens streamed so far are still charged). Best effort: if this is lost, the call runs to
            # its end and its step is dropped, as before.
            await self.engine.cancel_calls(did, "discussion stopped")
        return await self._view(did)
