"""The event outbox: a turn's one-statement commit, terminal events given to discussions ended without one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dialogue_helpers import (
    MIGRATIONS,
    TOPIC,
    command,
    dialogue,
    dialogue_settings,
    event_log,
    get,
    router,
    stored_events,
    wait_status,
)

from adp_common.bus import Bus
from adp_common.schemas.dialogue import DialogueQuery, EventsReply
from adp_dialogue import outbox


async def test_a_turn_commits_in_one_statement_only_while_it_is_due(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-statement commit of a turn before the round's last (outbox.commit_turn) writes what the
    general commit writes, and nothing at all once the step is no longer the discussion's current one."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    quick_commits: list[str] = []
    commit_turn = outbox.commit_turn

    async def counted(conn, did, step_key, *args):
        ev = await commit_turn(conn, did, step_key, *args)
        if ev is not None:
            quick_commits.append(step_key)
        return ev

    monkeypatch.setattr(outbox, "commit_turn", counted)
    async with router(nats_url, prefix), dialogue(settings) as app, event_log(bus) as log:
        assert app.engine is not None
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete", timeout=30)
        done = await wait_status(bus, view.id, "waiting")
        assert quick_commits == ["r1t1", "r1t2"]
        completes = log.of(view.id, "message-complete")
        # turns 1 and 2 took the one-statement path, turn 3 (the round's last) the general one: same shape
        assert [e.data["message"] for e in completes] == done.messages
        assert done.tokenCount == sum(m["outputTokens"] for m in done.messages)
        before = await stored_events(bus, view.id)
        message = dict(done.messages[0])
        stale = {
            "id": "stale",
            "persona": message["persona"],
            "content": "late",
            "round": 1,
            "turn": 1,
            "position": 1,
            "provider": None,
            "model": None,
            "input_tokens": 1,
            "output_tokens": 1,
            "created_at": datetime.now(UTC),
        }
        async with app.engine.pool.acquire() as conn:
            for step_key, retry in (("r1t1", 0), ("r1t2", 0), ("r2t1", 1)):
                nj = {"discussion_id": view.id, "kind": "turn", "step_key": "x", "round": 1, "position": 2}
                got = await outbox.commit_turn(conn, view.id, step_key, retry, stale, {"message": {}}, nj)
                assert got is None
            count = await conn.fetchval("SELECT count(*) FROM messages WHERE discussion_id = $1", view.id)
        assert count == 3
        assert await stored_events(bus, view.id) == before
        assert (await get(bus, "u1", view.id)).tokenCount == done.tokenCount


async def test_discussions_ended_before_terminal_events_get_theirs(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    """The migration gives an ended discussion without a terminal event (as stored by earlier versions) its
    one terminal event, last; running it again adds nothing."""
    migration = (MIGRATIONS / "003_terminal_events.sql").read_text()
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with dialogue(settings) as app, event_log(bus) as log:
        assert app.engine is not None
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)  # no router: it waits
        await log.wait_event(view.id, "error")
        await wait_status(bus, view.id, "waiting")
        await command(bus, action="stop", user_id="u1", discussion_id=view.id)
        async with app.engine.pool.acquire() as conn:
            await conn.execute("DELETE FROM events WHERE event = 'discussion-stopped' AND discussion_id = $1", view.id)
            await conn.execute("UPDATE discussions SET next_seq = next_seq - 1 WHERE id = $1", view.id)
            await conn.execute(migration)
            await conn.execute(migration)
        reply = await bus.request(
            bus.catalog.dialogue_query,
            DialogueQuery(kind="events", user_id="u1", discussion_id=view.id),
            response_model=EventsReply,
        )
    names = [e.event for e in reply.events]
    assert names[-1] == "discussion-stopped" and names.count("discussion-stopped") == 1
    assert reply.events[-1].data == {"status": "stopped", "round": 1}
    assert [e.seq for e in reply.events] == list(range(1, len(names) + 1))
