"""Plain SQL over asyncpg: the dialogue database is the only source of truth."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import orjson

from adp_dialogue.rows import (
    DiscussionDetail,
    DiscussionRow,
    MessageRow,
    QuestionSetRow,
    RoundRow,
    StepRow,
    SummaryRow,
    loads,
)

ACTIVE_STATUSES = ("running", "waiting")
Conn: TypeAlias = "asyncpg.Connection | asyncpg.pool.PoolConnectionProxy"

_UPDATABLE = {
    "status",
    "current_round",
    "token_count",
    "resolution",
    "current_job",
    "error",
    "personas",
}
_JSON_COLUMNS = {"resolution", "current_job", "error", "personas"}


def json_param(value: Any) -> str | None:
    """A value for a jsonb parameter (orjson: a step's events carry whole messages). Datetimes and other
    types JSON lacks are written as str() gives them, as the stdlib encoder with default=str did."""
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS).decode()


async def create_discussion(
    conn: Conn,
    *,
    id: str,
    user_id: str,
    topic: str,
    personas: list[dict[str, Any]],
    key_id: str | None = None,
    max_rounds: int,
    auto_mode: bool,
    token_limit: int,
    status: str,
    current_round: int,
    current_job: dict[str, Any] | None,
) -> DiscussionRow:
    row = await conn.fetchrow(
        """INSERT INTO discussions (id, user_id, topic, status, personas, current_round, max_rounds, auto_mode,
                                    token_limit, current_job, key_id)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb, $11)
           RETURNING *""",
        id,
        user_id,
        topic,
        status,
        json_param(personas),
        current_round,
        max_rounds,
        auto_mode,
        token_limit,
        json_param(current_job),
        key_id,
    )
    return DiscussionRow.of(row)


async def add_file(conn: Conn, *, id: str, discussion_id: str, name: str, content_type: str, size: int, text: str):
    await conn.execute(
        "INSERT INTO files (id, discussion_id, name, content_type, size, text) VALUES ($1, $2, $3, $4, $5, $6)",
        id,
        discussion_id,
        name,
        content_type,
        size,
        text,
    )


async def get_discussion(conn: Conn, discussion_id: str, *, for_update: bool = False) -> DiscussionRow | None:
    sql = "SELECT * FROM discussions WHERE id = $1" + (" FOR UPDATE" if for_update else "")
    row = await conn.fetchrow(sql, discussion_id)
    return DiscussionRow.of(row) if row is not None else None


async def discussion_with_children(conn: Conn, discussion_id: str) -> DiscussionDetail | None:
    """The discussion row and, in the same round trip, its messages, rounds, summaries and question sets,
    as arrays of their rows in order (`v_messages`, `v_rounds`, `v_summaries`, `v_questions`; NULL when
    there are none) — what a full view needs, in one query instead of five."""
    row = await conn.fetchrow(
        """SELECT d.*,
             (SELECT array_agg(m ORDER BY m.round, m.position) FROM messages m
               WHERE m.discussion_id = d.id) AS v_messages,
             (SELECT array_agg(r ORDER BY r.number) FROM rounds r WHERE r.discussion_id = d.id) AS v_rounds,
             (SELECT array_agg(s ORDER BY s.round) FROM summaries s WHERE s.discussion_id = d.id) AS v_summaries,
             (SELECT array_agg(q ORDER BY q.round) FROM question_sets q WHERE q.discussion_id = d.id) AS v_questions
           FROM discussions d WHERE d.id = $1""",
        discussion_id,
    )
    return DiscussionDetail.of(row) if row is not None else None


async def stop_discussion(conn: Conn, discussion_id: str, user_id: str, terminal: Iterable[str]) -> int | None:
    """Stop the user's discussion unless it is in a terminal status already: its current round if it was
    stopped now, else None."""
    return await conn.fetchval(
        """UPDATE discussions SET status = 'stopped', current_job = NULL, updated_at = now()
           WHERE id = $1 AND user_id = $2 AND status <> ALL($3::text[]) RETURNING current_round""",
        discussion_id,
        user_id,
        list(terminal),
    )


async def lock_user(conn: Conn, user_id: str) -> None:
    """Serialise creations by one user (the active-discussion limit is checked under this lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dialogue-user:' || $1))", user_id)


def assignments(fields: dict[str, Any], first_param: int) -> tuple[list[str], list[Any]]:
    """`col = $n` assignments (JSON columns cast) for an UPDATE of discussions, numbered from `first_param`."""
    sets, args = [], []
    for i, (k, v) in enumerate(fields.items(), start=first_param):
        if k not in _UPDATABLE:
            raise ValueError(f"cannot update {k}")
        if k in _JSON_COLUMNS:
            sets.append(f"{k} = ${i}::jsonb")
            args.append(json_param(v))
        else:
            sets.append(f"{k} = ${i}")
            args.append(v)
    return sets, args


async def update_discussion(conn: Conn, discussion_id: str, **fields: Any) -> None:
    if not fields:
        return
    sets, args = assignments(fields, 2)
    await conn.execute(
        f"UPDATE discussions SET {', '.join(sets)}, updated_at = now() WHERE id = $1", discussion_id, *args
    )


async def list_discussions(conn: Conn, user_id: str, limit: int = 200) -> list[DiscussionRow]:
    rows = await conn.fetch(
        "SELECT * FROM discussions WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2", user_id, limit
    )
    return [DiscussionRow.of(r) for r in rows]


async def count_active(conn: Conn, user_id: str | None = None) -> int:
    if user_id is None:
        return await conn.fetchval("SELECT count(*) FROM discussions WHERE status = ANY($1::text[])", ACTIVE_STATUSES)
    return await conn.fetchval(
        "SELECT count(*) FROM discussions WHERE user_id = $1 AND status = ANY($2::text[])", user_id, ACTIVE_STATUSES
    )


async def count_messages_of(conn: Conn, discussion_id: str, persona: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM messages WHERE discussion_id = $1 AND persona = $2", discussion_id, persona
    )


async def messages(conn: Conn, discussion_id: str) -> list[MessageRow]:
    rows = await conn.fetch("SELECT * FROM messages WHERE discussion_id = $1 ORDER BY round, position", discussion_id)
    return [MessageRow.of(r) for r in rows]


async def insert_message(
    conn: Conn,
    *,
    id: str,
    discussion_id: str,
    persona: str,
    content: str,
    round: int,
    turn: int,
    position: int,
    provider: str | None,
    model: str | None,
    input_tokens: int,
    output_tokens: int,
) -> MessageRow | None:
    """The stored message, or None when this (round, turn) is already stored."""
    row = await conn.fetchrow(
        """INSERT INTO messages (id, discussion_id, persona, content, round, turn, position, provider, model,
                                 input_tokens, output_tokens)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (discussion_id, round, turn) DO NOTHING RETURNING *""",
        id,
        discussion_id,
        persona,
        content,
        round,
        turn,
        position,
        provider,
        model,
        input_tokens,
        output_tokens,
    )
    return MessageRow.of(row) if row is not None else None


async def insert_round(conn: Conn, discussion_id: str, number: int, token_count: int) -> RoundRow | None:
    row = await conn.fetchrow(
        """INSERT INTO rounds (discussion_id, number, token_count) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING *""",
        discussion_id,
        number,
        token_count,
    )
    return RoundRow.of(row) if row is not None else None


async def insert_summary(
    conn: Conn,
    *,
    id: str,
    discussion_id: str,
    round: int,
    content: str,
    tokens_before: int,
    tokens_after: int,
    reason: str,
) -> SummaryRow | None:
    row = await conn.fetchrow(
        """INSERT INTO summaries (id, discussion_id, round, content, tokens_before, tokens_after, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (discussion_id, round) DO NOTHING RETURNING *""",
        id,
        discussion_id,
        round,
        content,
        tokens_before,
        tokens_after,
        reason,
    )
    return SummaryRow.of(row) if row is not None else None


async def summaries(conn: Conn, discussion_id: str) -> list[SummaryRow]:
    rows = await conn.fetch("SELECT * FROM summaries WHERE discussion_id = $1 ORDER BY round", discussion_id)
    return [SummaryRow.of(r) for r in rows]


async def insert_question_set(
    conn: Conn,
    *,
    id: str,
    discussion_id: str,
    round: int,
    questions: list[dict[str, Any]],
    reason: str,
    fallback: bool,
) -> QuestionSetRow | None:
    row = await conn.fetchrow(
        """INSERT INTO question_sets (id, discussion_id, round, questions, reason, fallback)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT (discussion_id, round) DO NOTHING RETURNING *""",
        id,
        discussion_id,
        round,
        json_param(questions),
        reason,
        fallback,
    )
    return QuestionSetRow.of(row) if row is not None else None


async def question_set(conn: Conn, discussion_id: str, round: int) -> QuestionSetRow | None:
    row = await conn.fetchrow(
        "SELECT * FROM question_sets WHERE discussion_id = $1 AND round = $2", discussion_id, round
    )
    return QuestionSetRow.of(row) if row is not None else None


async def answer_question_set(conn: Conn, set_id: str, answers: dict[str, list[str]]) -> None:
    await conn.execute(
        "UPDATE question_sets SET answers = $2::jsonb, answered_at = now() WHERE id = $1", set_id, json_param(answers)
    )


_STEP_CONTEXT = """
             (SELECT coalesce(json_agg(json_build_object('persona', persona, 'content', content,
                                                         'round', round, 'turn', turn) ORDER BY round, position),
                              '[]'::json)
                FROM messages WHERE discussion_id = d.id) AS ctx_messages,
             (SELECT json_build_object('round', round, 'content', content)
                FROM summaries WHERE discussion_id = d.id ORDER BY round DESC LIMIT 1) AS ctx_summary,
             (SELECT coalesce(json_agg(json_build_object('name', name, 'text', text) ORDER BY created_at, id),
                              '[]'::json)
                FROM files WHERE discussion_id = d.id) AS ctx_files,
             (SELECT coalesce(array_agg(round), '{}')
                FROM question_sets WHERE discussion_id = d.id) AS ctx_question_rounds"""
_NO_CONTEXT = """
             '[]'::json AS ctx_messages, NULL::json AS ctx_summary, '[]'::json AS ctx_files,
             '{}'::int[] AS ctx_question_rounds"""


async def load_step(
    conn: Conn, discussion_id: str, step_key: str, *, for_update: bool = False, context: bool = True
) -> StepRow | None:
    """In one round trip, everything a step needs: the discussion row (locked with `for_update`), whether
    `step_key` was already processed (`step_done`, `step_next_job`), and the prompt context — every
    message in order (`ctx_messages`, JSON), the latest summary (`ctx_summary`, JSON or NULL), the files'
    text (`ctx_files`, JSON) and the rounds that had questions (`ctx_question_rounds`, int array).

    `context=False` leaves the prompt context out (the ctx_* columns come back empty): for a commit that
    needs only the row, since the context grows with every message of the discussion."""
    row = await conn.fetchrow(
        f"""SELECT d.*,
             p.discussion_id IS NOT NULL AS step_done,
             p.next_job AS step_next_job,{_STEP_CONTEXT if context else _NO_CONTEXT}
           FROM discussions d
           LEFT JOIN processed_steps p ON p.discussion_id = d.id AND p.step_key = $2
           WHERE d.id = $1"""
        + (" FOR UPDATE OF d" if for_update else ""),
        discussion_id,
        step_key,
    )
    return StepRow.of(row) if row is not None else None


async def stalled_running(conn: Conn, older_than_s: float, limit: int = 100) -> list[tuple[str, dict[str, Any] | None]]:
    """Discussions 'running' with no progress for `older_than_s` (their current job is re-published)."""
    rows = await conn.fetch(
        """SELECT id, current_job FROM discussions
           WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1)
           ORDER BY updated_at LIMIT $2""",
        older_than_s,
        limit,
    )
    return [(r["id"], loads(r["current_job"])) for r in rows]


async def touch(conn: Conn, discussion_id: str) -> datetime:
    return await conn.fetchval(
        "UPDATE discussions SET updated_at = now() WHERE id = $1 RETURNING updated_at", discussion_id
    )
