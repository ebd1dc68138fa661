"""Discussion commands over the bus (real NATS, Postgres and the llm-router's simulated provider): a full
discussion, validation, ownership and limits, stop mid-turn."""

from __future__ import annotations

import asyncio

import pytest
from dialogue_helpers import (
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
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import CountReply, DialogueQuery, DiscussionList, ExportReply


async def test_full_discussion_with_answers_input_summary_and_resolution(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix), dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        did = view.id
        assert view.status == "running" and view.currentRound == 1 and view.hasActiveDiscussion
        await log.wait_event(did, "round-complete")
        # questions on request, then answers -> round 2
        await command(bus, action="questions", user_id="u1", discussion_id=did)
        qev = await log.wait_event(did, "questions-generated")
        qset = qev.data["questionSet"]
        assert qev.data["roundNumber"] == 1 and 2 <= len(qset["questions"]) <= 5
        answers = {q["id"]: [q["options"][0]["id"]] for q in qset["questions"]}
        await wait_status(bus, did, "waiting")
        await command(bus, action="answers", user_id="u1", discussion_id=did, round_number=1, answers=answers)
        await log.wait_event(did, "round-complete", 2)
        # free input -> round 3
        await wait_status(bus, did, "waiting")
        await command(bus, action="input", user_id="u1", discussion_id=did, input="Keep it cheap, please.")
        await log.wait_event(did, "round-complete", 3)
        await wait_status(bus, did, "waiting")
        # a summary on request
        await command(bus, action="summary", user_id="u1", discussion_id=did)
        sev = await log.wait_event(did, "summary-created")
        assert sev.data["summary"]["roundNumber"] == 3 and sev.data["summary"]["tokensBefore"] > 0
        await wait_status(bus, did, "waiting")
        for rnd in (4, 5):
            await command(bus, action="proceed", user_id="u1", discussion_id=did)
            await log.wait_event(did, "round-complete", rnd)
            if rnd == 4:
                await wait_status(bus, did, "waiting")
        resolved = await log.wait_event(did, "discussion-resolved")
        final = resolved.data["finalAnswer"]
        assert 500 <= len(final) <= 1000
        view = await wait_status(bus, did, "resolved")

    # Every message has a turn of its own, in order; User messages joined rounds 2 and 3 and carry no tokens.
    assert [m["turn"] for m in view.messages] == list(range(1, 18))
    ai = [m for m in view.messages if m["persona"] != "User"]
    assert [m["persona"] for m in ai[:3]] == ["Analyzer", "Solver", "Moderator"]
    users = [m for m in view.messages if m["persona"] == "User"]
    assert [u["round"] for u in users] == [2, 3]
    assert all("outputTokens" not in u and "inputTokens" not in u for u in users)
    assert all(m["outputTokens"] > 0 for m in ai)
    assert "My answers" in users[0]["content"] and users[1]["content"] == "Keep it cheap, please."
    assert [r["number"] for r in view.rounds] == [1, 2, 3, 4, 5]
    assert len(view.rounds[0]["messages"]) == 3
    assert {s["roundNumber"] for s in view.summaries} == {3, 5}  # on request, then every 5 rounds
    assert view.questions[0]["answers"] == answers
    assert view.resolution and view.resolution["solution"] and view.resolution["round"] == 5

    # Durable events: contiguous seqs from 1, contract names, message-start before each message-complete.
    events = await stored_events(bus, did)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    names = [e.event for e in events]
    assert names[0] == "discussion-started" and names[-1] == "discussion-resolved"
    assert sum(n.startswith("discussion-") and n != "discussion-started" for n in names) == 1
    assert names.count("message-start") == 15 and names.count("message-complete") == 17
    assert names.count("round-complete") == 5
    first_done = next(e for e in events if e.event == "message-complete")
    assert set(first_done.data["message"]) >= {"id", "persona", "content", "turn", "round", "provider", "model"}
    chunks = log.of(did, "message-chunk")
    assert chunks and all(c.seq == 0 for c in chunks)
    turn1 = "".join(c.data["chunk"] for c in chunks if c.data["turn"] == 1)
    assert turn1.strip() == ai[0]["content"]
    # Live order: each turn's message-start reaches listeners before any of its chunks (the LLM request
    # is sent right after message-start, without waiting for its JetStream ack).
    started: set[int] = set()
    for e in log.of(did):
        if e.event == "message-start":
            started.add(e.data["turn"])
        elif e.event == "message-chunk":
            assert e.data["turn"] in started, f"chunk of turn {e.data['turn']} before its message-start"


async def test_commands_validation_ownership_and_limits(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"), max_active_discussions=1)
    async with router(nats_url, prefix), dialogue(settings), event_log(bus) as log:
        with pytest.raises(PlatformError) as short:
            await command(bus, action="create", user_id="u1", topic="too short")
        assert short.value.code == ErrorCode.VALIDATION_ERROR
        with pytest.raises(PlatformError) as long:
            await command(bus, action="create", user_id="u1", topic="x" * 1001)
        assert long.value.code == ErrorCode.VALIDATION_ERROR
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        did = view.id
        with pytest.raises(PlatformError) as busy:
            await command(bus, action="proceed", user_id="u1", discussion_id=did)
        assert busy.value.code == ErrorCode.CONFLICT
        with pytest.raises(PlatformError) as limit:
            await command(bus, action="create", user_id="u1", topic=TOPIC)
        assert limit.value.code == ErrorCode.ACTIVE_DISCUSSION_LIMIT and "hasActiveDiscussion" in limit.value.message
        with pytest.raises(PlatformError) as other:
            await get(bus, "u2", did)
        assert other.value.code == ErrorCode.DISCUSSION_NOT_FOUND
        with pytest.raises(PlatformError) as other_cmd:
            await command(bus, action="stop", user_id="u2", discussion_id=did)
        assert other_cmd.value.code == ErrorCode.DISCUSSION_NOT_FOUND
        with pytest.raises(PlatformError) as bad:
            await get(bus, "u1", "not-an-id")
        assert bad.value.code == ErrorCode.INVALID_DISCUSSION_ID
        await log.wait_event(did, "round-complete")
        await wait_status(bus, did, "waiting")
        with pytest.raises(PlatformError) as noq:
            await command(bus, action="answers", user_id="u1", discussion_id=did, answers={"q1": ["q1o1"]})
        assert noq.value.code == ErrorCode.VALIDATION_ERROR
        count = await bus.request(
            bus.catalog.dialogue_query, DialogueQuery(kind="active_count"), response_model=CountReply
        )
        assert count.count == 1
        listed = await bus.request(
            bus.catalog.dialogue_query, DialogueQuery(kind="list", user_id="u1"), response_model=DiscussionList
        )
        assert [d.id for d in listed.discussions] == [did]
        md = await bus.request(
            bus.catalog.dialogue_query,
            DialogueQuery(kind="export", user_id="u1", discussion_id=did, format="markdown"),
            response_model=ExportReply,
        )
        assert md.content.startswith("# Discussion: How should a small team roll out feature flags safely?")
        assert "### Analyzer (turn 1)" in md.content
        js = await bus.request(
            bus.catalog.dialogue_query,
            DialogueQuery(kind="export", user_id="u1", discussion_id=did, format="json"),
            response_model=ExportReply,
        )
        assert f'"id": "{did}"' in js.content
        assert (await get(bus, "u1", did)).hasActiveDiscussion is True
        assert listed.discussions[0].hasActiveDiscussion is True
        stopped = await command(bus, action="stop", user_id="u1", discussion_id=did)
        assert stopped.status == "stopped" and stopped.hasActiveDiscussion is False
        assert (await get(bus, "u1", did)).hasActiveDiscussion is False
        ended = await log.wait_event(did, "discussion-stopped")
        assert ended.data == {"status": "stopped", "round": 1}
        await command(bus, action="stop", user_id="u1", discussion_id=did)  # stopping again changes nothing
        again = await command(bus, action="create", user_id="u1", topic=TOPIC)  # the limit frees up
        assert again.id != did and again.hasActiveDiscussion is True
    names = [e.event for e in await stored_events(bus, did)]
    assert names.count("discussion-stopped") == 1 and names[-1] == "discussion-stopped"


async def test_stop_mid_turn_cancels_the_llm_call(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases) -> None:
    """Stopping a discussion while a persona is answering cuts that answer at the router (no more tokens
    are generated or charged), and the dropped step leaves no error behind."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix, tokens_per_s=20) as rapp, dialogue(settings), event_log(bus) as log:
        assert rapp.router is not None and rapp.metrics is not None
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        did = view.id
        await log.wait(lambda evs: any(e.discussionId == did and e.event == "message-chunk" for e in evs), 10)
        assert did in rapp.router.inflight.by_discussion  # the first persona is answering (slowly: ~20 tokens/s)
        stopped = await command(bus, action="stop", user_id="u1", discussion_id=did)
        assert stopped.status == "stopped"
        for _ in range(100):
            if did not in rapp.router.inflight.by_discussion:
                break
            await asyncio.sleep(0.02)
        assert did not in rapp.router.inflight.by_discussion  # cancelled within ~2 s, not after the whole answer
        assert rapp.metrics.cancelled._value.get() == 1
        await asyncio.sleep(0.5)  # the step's end (dropped) has been handled
        done = await get(bus, "u1", did)
    assert done.status == "stopped" and done.error is None and done.messages == []
    assert log.of(did, "error") == [] and log.of(did, "message-complete") == []
