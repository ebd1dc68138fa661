"""The discussion event outbox: events stored with per-discussion seqs in the step's transaction (published
after commit, re-published with the same seqs when a step is redelivered), and read back for replay."""

from __future__ import annotations

from typing import Any

import asyncpg

from adp_common.schemas.dialogue import DiscussionEvent
from adp_dialogue.rows import loads
from adp_dialogue.store import Conn, assignments, json_param


async def add_events(
    conn: Conn, discussion_id: str, step_key: str | None, events: list[tuple[str, dict[str, Any]]]
) -> list[DiscussionEvent]:
    """Allocate consecutive seqs (in the caller's transaction) and store the events, in one statement
    however many events. Marks the discussion as active (updated_at) too."""
    if not events:
        return []
    return await _store_events(conn, discussion_id, step_key, events, {}, mark=False, next_job=None)


async def _store_events(
    conn: Conn,
    discussion_id: str,
    step_key: str | None,
    events: list[tuple[str, dict[str, Any]]],
    updates: dict[str, Any],
    *,
    mark: bool,
    next_job: dict[str, Any] | None,
) -> list[DiscussionEvent]:
    """One statement: allocate the events' seqs while applying `updates` to the discussion, store the
    events and, with `mark`, record `step_key` as processed (with its follow-up job)."""
    params: list[Any] = [
        discussion_id,
        len(events),
        [n for n, _ in events],
        [json_param(d) for _, d in events],
        step_key,
    ]
    marked = ""
    if mark:
        params.append(json_param(next_job))
        marked = """,
            marked AS (
              INSERT INTO processed_steps (discussion_id, step_key, next_job)
              SELECT $1, $5, $6::jsonb FROM alloc
              ON CONFLICT DO NOTHING)"""
    sets, args = assignments(updates, len(params) + 1)
    row = await conn.fetchrow(
        f"""WITH alloc AS (
              UPDATE discussions SET {"".join(x + ", " for x in sets)}next_seq = next_seq + $2, updated_at = now()
               WHERE id = $1
              RETURNING next_seq - $2 AS first),
            stored AS (
              INSERT INTO events (discussion_id, seq, event, data, step_key)
              SELECT $1, alloc.first + e.i - 1, e.event, e.data::jsonb, $5
                FROM alloc, unnest($3::text[], $4::text[]) WITH ORDINALITY AS e(event, data, i)
              RETURNING seq){marked}
            SELECT alloc.first, now() AS at, (SELECT count(*) FROM stored) AS n FROM alloc""",
        *params,
        *args,
    )
    if row is None or row["n"] != len(events):
        raise LookupError(f"discussion {discussion_id} not found")
    return [
        DiscussionEvent(discussionId=discussion_id, seq=row["first"] + i, event=name, data=data, time=row["at"])
        for i, (name, data) in enumerate(events)
    ]


async def add_start_event(
    conn: Conn, discussion_id: str, step_key: str, event: str, data: dict[str, Any]
) -> DiscussionEvent:
    """Store a step's opening event in one statement (atomic on its own, no transaction needed). When the
    step already has an event under `step_key` (it is being run again after a crash or a retry), the data
    gets `"restart": true` so listeners drop the partial answer they saw."""
    row = await conn.fetchrow(
        """WITH prior AS (
             SELECT EXISTS (SELECT 1 FROM events WHERE discussion_id = $1 AND step_key = $2) AS again),
           alloc AS (
             UPDATE discussions SET next_seq = next_seq + 1, updated_at = now() WHERE id = $1
             RETURNING next_seq - 1 AS seq)
           INSERT INTO events (discussion_id, seq, event, data, step_key)
           SELECT $1, alloc.seq, $3,
                  CASE WHEN prior.again THEN $4::jsonb || '{"restart": true}'::jsonb ELSE $4::jsonb END, $2
             FROM alloc, prior
           RETURNING seq, data, created_at""",
        discussion_id,
        step_key,
        event,
        json_param(data),
    )
    if row is None:
        raise LookupError(f"discussion {discussion_id} not found")
    return DiscussionEvent(
        discussionId=discussion_id, seq=row["seq"], event=event, data=loads(row["data"]), time=row["created_at"]
    )


async def finish_step(
    conn: Conn,
    discussion_id: str,
    step_key: str,
    events: list[tuple[str, dict[str, Any]]],
    updates: dict[str, Any],
    next_job: dict[str, Any] | None,
) -> list[DiscussionEvent]:
    """A step's outcome in one statement (call inside the step's transaction): its events (consecutive
    seqs), the discussion's new state, and the processed mark (`processed_steps`) holding the follow-up job
    — one round trip where separate statements took three."""
    return await _store_events(conn, discussion_id, step_key, events, updates, mark=True, next_job=next_job)


async def commit_turn(
    conn: Conn,
    discussion_id: str,
    step_key: str,
    retry: int,
    message: dict[str, Any],
    event_data: dict[str, Any],
    next_job: dict[str, Any],
) -> DiscussionEvent | None:
    """A turn before its round's last, committed in one statement (no transaction, no lock round trip):
    when the discussion is still running this step (`current_job` names it, with this retry), store the
    message (`message`: the messages row, created_at included) and its `message-complete` event
    (`event_data`), add the turn's tokens, make `next_job` the current job and mark the step processed.
    None when the step is no longer current (stopped, paused, or committed by another copy, which moves
    `current_job` on): nothing is written, and the caller takes the general path, which tells those apart.
    (Also None, with the step marked done, if the message was somehow stored already: the general path then
    finds the step done and publishes its follow-up job.)"""
    row = await conn.fetchrow(
        """WITH alloc AS (
             UPDATE discussions
                SET current_job = $5::jsonb, token_count = token_count + $6, next_seq = next_seq + 1,
                    updated_at = now()
              WHERE id = $1 AND status = 'running' AND current_job->>'step_key' = $2
                AND COALESCE((current_job->'data'->>'retry')::int, 0) = $3
             RETURNING next_seq - 1 AS seq),
           msg AS (
             INSERT INTO messages (id, discussion_id, persona, content, round, turn, position, provider, model,
                                   input_tokens, output_tokens, created_at)
             SELECT $7, $1, $8, $9, $10, $11, $12, $13, $14, $15, $6, $16 FROM alloc
             ON CONFLICT (discussion_id, round, turn) DO NOTHING RETURNING 1),
           stored AS (
             INSERT INTO events (discussion_id, seq, event, data, step_key)
             SELECT $1, alloc.seq, 'message-complete', $4::jsonb, $2 FROM alloc, msg),
           marked AS (
             INSERT INTO processed_steps (discussion_id, step_key, next_job)
             SELECT $1, $2, $5::jsonb FROM alloc ON CONFLICT DO NOTHING)
           SELECT alloc.seq, now() AS at, (SELECT count(*) FROM msg) AS stored FROM alloc""",
        discussion_id,
        step_key,
        retry,
        json_param(event_data),
        json_param(next_job),
        message["output_tokens"],
        message["id"],
        message["persona"],
        message["content"],
        message["round"],
        message["turn"],
        message["position"],
        message["provider"],
        message["model"],
        message["input_tokens"],
        message["created_at"],
    )
    if row is None or not row["stored"]:
        return None
    return DiscussionEvent(
        discussionId=discussion_id, seq=row["seq"], event="message-complete", data=event_data, time=row["at"]
    )


async def events_for_step(conn: Conn, discussion_id: str, step_key: str) -> list[DiscussionEvent]:
    rows = await conn.fetch(
        "SELECT * FROM events WHERE discussion_id = $1 AND step_key = $2 ORDER BY seq", discussion_id, step_key
    )
    return [_event(r) for r in rows]


async def owned_events_after(
    conn: Conn, discussion_id: str, user_id: str, after_seq: int, limit: int = 10_000
) -> list[DiscussionEvent] | None:
    """In one round trip, the discussion's stored events with seq > `after_seq` (oldest first), or None
    unless the discussion exists and belongs to `user_id`."""
    rows = await conn.fetch(
        """SELECT d.user_id, e.discussion_id, e.seq, e.event, e.data, e.created_at
             FROM discussions d
             LEFT JOIN LATERAL (SELECT * FROM events
                                 WHERE discussion_id = d.id AND seq > $3 ORDER BY seq LIMIT $4) e ON true
            WHERE d.id = $1 AND d.user_id = $2
            ORDER BY e.seq""",
        discussion_id,
        user_id,
        after_seq,
        limit,
    )
    if not rows:
        return None
    return [_event(r) for r in rows if r["seq"] is not None]


def _event(r: asyncpg.Record) -> DiscussionEvent:
    return DiscussionEvent(
        discussionId=r["discussion_id"], seq=r["seq"], event=r["event"], data=loads(r["data"]), time=r["created_at"]
    )
