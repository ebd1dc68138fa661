"""Discussion queries over the bus: stored events replayed after a seq, to the owner only."""

from __future__ import annotations

import pytest
from dialogue_helpers import (
    TOPIC,
    command,
    dialogue,
    dialogue_settings,
    event_log,
    router,
    stored_events,
)

from adp_common.bus import Bus
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import DialogueQuery, EventsReply


async def test_events_query_replays_stored_events_after_a_seq_to_the_owner_only(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    """The history a live listener replays (gateway SSE / Socket.IO) comes from the event store: the same
    events, seqs and data as the DISCUSSIONS stream, from any seq on; another user gets DISCUSSION_NOT_FOUND."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix), dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        did = view.id
        await log.wait_event(did, "round-complete")
        streamed = await stored_events(bus, did)

        async def events(user: str, after: int) -> list:
            q = DialogueQuery(kind="events", user_id=user, discussion_id=did, after_seq=after)
            return (await bus.request(bus.catalog.dialogue_query, q, timeout=10, response_model=EventsReply)).events

        every = await events("u1", 0)
        assert [(e.seq, e.event, e.data) for e in every] == [(e.seq, e.event, e.data) for e in streamed]
        assert [e.seq for e in every] == list(range(1, len(every) + 1))
        assert [e.seq for e in await events("u1", 3)] == list(range(4, len(every) + 1))
        assert await events("u1", len(every)) == []
        with pytest.raises(PlatformError) as other:
            await events("u2", 0)
        assert other.value.code == ErrorCode.DISCUSSION_NOT_FOUND
