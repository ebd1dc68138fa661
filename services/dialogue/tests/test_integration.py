"""Integration: real NATS, Postgres and the llm-router (simulated provider) in-process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from dialogue_helpers import MIGRATIONS, command, dialogue, dialogue_settings, event_log, get, router, stored_events

from adp_common.bus import Bus
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import CountReply, DialogueQuery, DiscussionList, EventsReply, ExportReply
from adp_dialogue import store
from adp_testing.garbage import cyclic_garbage

TOPIC = "How should a small team roll out feature flags safely?"


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
        await _wait_status(bus, did, "waiting")
        await command(bus, action="answers", user_id="u1", discussion_id=did, round_number=1, answers=answers)
        await log.wait_event(did, "round-complete", 2)
        # free input -> round 3
        await _wait_status(bus, did, "waiting")
        await command(bus, action="input", user_id="u1", discussion_id=did, input="Keep it cheap, please.")
        await log.wait_event(did, "round-complete", 3)
        await _wait_status(bus, did, "waiting")
        # a summary on request
        await command(bus, action="summary", user_id="u1", discussion_id=did)
        sev = await log.wait_event(did, "summary-created")
        assert sev.data["summary"]["roundNumber"] == 3 and sev.data["summary"]["tokensBefore"] > 0
        await _wait_status(bus, did, "waiting")
        for rnd in (4, 5):
            await command(bus, action="proceed", user_id="u1", discussion_id=did)
            await log.wait_event(did, "round-complete", rnd)
            if rnd == 4:
                await _wait_status(bus, did, "waiting")
        resolved = await log.wait_event(did, "discussion-resolved")
        final = resolved.data["finalAnswer"]
        assert 500 <= len(final) <= 1000
        view = await _wait_status(bus, did, "resolved")

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

    # (no longer running, so exports and queries still work without the service? no: restart for queries)


async def _wait_status(bus: Bus, did: str, status: str, user: str = "u1", timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await get(bus, user, did)
        if view.status == status:
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status {view.status} != {status}: {view.error}")
        await asyncio.sleep(0.05)


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
        await _wait_status(bus, did, "waiting")
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


async def test_router_errors_leave_the_discussion_resumable(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)  # no router is running
        did = view.id
        err = await log.wait_event(did, "error")
        assert err.data["code"] == "NO_LLM_PROVIDER_AVAILABLE"
        failed = await _wait_status(bus, did, "waiting")
        assert failed.error and failed.error["code"] == "NO_LLM_PROVIDER_AVAILABLE" and failed.messages == []
        with pytest.raises(PlatformError) as blocked:
            await command(bus, action="input", user_id="u1", discussion_id=did, input="hello there")
        assert blocked.value.code == ErrorCode.CONFLICT
        async with router(nats_url, prefix):
            resumed = await command(bus, action="proceed", user_id="u1", discussion_id=did)
            assert resumed.status == "running" and resumed.error is None and resumed.currentRound == 1
            await log.wait_event(did, "round-complete")
            done = await _wait_status(bus, did, "waiting")
    assert [m["turn"] for m in done.messages] == [1, 2, 3] and done.error is None


async def test_a_step_failing_past_its_attempts_fails_the_discussion(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"), max_step_attempts=2)
    async with dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)  # no router is running
        did = view.id
        await log.wait_event(did, "error")
        await _wait_status(bus, did, "waiting")
        await command(bus, action="proceed", user_id="u1", discussion_id=did)
        ended = await log.wait_event(did, "discussion-failed")
        failed = await _wait_status(bus, did, "failed")
        with pytest.raises(PlatformError) as over:
            await command(bus, action="proceed", user_id="u1", discussion_id=did)
    assert ended.data["status"] == "failed" and ended.data["code"] == "NO_LLM_PROVIDER_AVAILABLE"
    assert failed.hasActiveDiscussion is False and over.value.code == ErrorCode.CONFLICT
    names = [e.event for e in await stored_events(bus, did) if e.event != "message-start"]
    assert names == ["discussion-started", "error", "error", "discussion-failed"]


async def test_crash_between_commit_and_publish_does_not_stall(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    crashed: list[str] = []
    async with router(nats_url, prefix), dialogue(settings) as app, event_log(bus) as log:
        assert app.engine is not None

        async def crash_once(job) -> None:
            if job.step_key == "r1t2" and not crashed:
                crashed.append(job.step_key)
                raise RuntimeError("simulated crash after commit")

        app.engine.after_commit_hook = crash_once
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete", timeout=30)
        done = await _wait_status(bus, view.id, "waiting")
    assert crashed == ["r1t2"]
    assert [m["turn"] for m in done.messages] == [1, 2, 3]
    events = await stored_events(bus, view.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.event for e in events].count("message-complete") == 3


async def test_a_step_rerun_after_its_answer_came_replays_it(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    """A step that dies between its LLM answer and its commit is run again, and the router replays the
    answer it already has: one provider call and one `ok` charge per stored message."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    crashed: list[str] = []
    async with router(nats_url, prefix) as rapp, dialogue(settings) as app, event_log(bus) as log:
        engine = app.engine
        assert engine is not None and rapp.rt is not None
        real_commit = engine._commit

        async def crash_once(job, *args, **kw) -> None:
            if job.step_key == "r1t2" and not crashed:
                crashed.append(job.step_key)
                raise RuntimeError("simulated crash before the commit")
            await real_commit(job, *args, **kw)

        engine._commit = crash_once
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete", timeout=30)
        done = await _wait_status(bus, view.id, "waiting")
        replayed = rapp.rt.metrics.registry.get_sample_value("adp_router_replays_total", {"how": "replayed"})
        msgs = await bus.stream_messages(bus.catalog.stream_name("USAGE"), bus.catalog.usage_record)
    assert crashed == ["r1t2"] and replayed == 1
    assert [m["turn"] for m in done.messages] == [1, 2, 3]
    charges = [r for r in (decode(m.data).payload for m in msgs) if r.discussion_id == view.id and r.status == "ok"]
    assert len(charges) == 3, [r.request_id for r in charges]


async def test_two_copies_share_the_work(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases) -> None:
    db = databases.name("dialogue")
    s1 = dialogue_settings(nats_url, pg_dsn, prefix, db, instance_id="d1", max_active_discussions=5)
    s2 = dialogue_settings(nats_url, pg_dsn, prefix, db, instance_id="d2", max_active_discussions=5)
    async with router(nats_url, prefix, tokens_per_s=3000), dialogue(s1) as a, dialogue(s2) as b:
        async with event_log(bus) as log:
            ids = []
            for i in range(4):
                v = await command(bus, action="create", user_id=f"u{i}", topic=TOPIC, auto=True, max_rounds=3)
                ids.append(v.id)
            for did in ids:
                await log.wait_event(did, "round-complete", 3, timeout=60)
            views = [await _wait_status(bus, did, "completed", user=f"u{i}") for i, did in enumerate(ids)]
        assert a.consumer is not None and b.consumer is not None
        assert a.consumer.processed > 0 and b.consumer.processed > 0
    for v in views:
        assert [m["turn"] for m in v.messages] == list(range(1, 10))
        names = [e.event for e in await stored_events(bus, v.id)]
        assert names[-1] == "discussion-completed" and names.count("discussion-completed") == 1


@pytest.mark.slow
async def test_copy_killed_mid_turn_is_taken_over(bus: Bus, processes, prefix: str) -> None:
    await processes.start_healthy(
        ["llm-router"],
        extra_env={
            "ADP_ROUTER_SIMULATED": "always",
            "ADP_SIMULATED_TTFT_MS": "0",
            "ADP_SIMULATED_TOKENS_PER_S": "40",
        },
    )
    # default step settings: how soon the survivor takes over is what a user would see
    copies = await processes.start_healthy(["dialogue"], replicas=2)
    async with event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC, auto=True, max_rounds=2)
        did = view.id
        # Wait until turn 2 is streaming, then kill -9 the copy that runs it.
        await log.wait(lambda evs: any(e.event == "message-chunk" and e.data["turn"] == 2 for e in evs), 30)
        runner = [p for p in copies if f"running step r1t2 of {did}" in p.log_path.read_text(errors="replace")]
        assert len(runner) == 1, [p.log_tail() for p in copies]
        processes.kill(runner[0])
        killed_at = time.monotonic()
        survivor = next(p for p in copies if p is not runner[0])
        restarted = await log.wait(
            lambda evs: [e for e in evs if e.event == "message-start" and e.data.get("restart")], 30
        )
        taken_over_s = time.monotonic() - killed_at
        print(f"turn taken over {taken_over_s:.2f} s after the kill")
        assert restarted[0].data["turn"] == 2
        # the step's ack wait (plus a fetch and a loaded machine's slack), not a 30 s timeout
        assert taken_over_s < 6.5, taken_over_s
        await log.wait_event(did, "round-complete", 2, timeout=60)
        done = await _wait_status(bus, did, "completed")
    assert survivor.alive()
    assert [m["turn"] for m in done.messages] == [1, 2, 3, 4, 5, 6]
    events = await stored_events(bus, did)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    completes = [e.data["message"]["turn"] for e in events if e.event == "message-complete"]
    assert completes == [1, 2, 3, 4, 5, 6]
    starts = [(e.data["turn"], bool(e.data.get("restart"))) for e in events if e.event == "message-start"]
    assert starts == [(1, False), (2, False), (2, True), (3, False), (4, False), (5, False), (6, False)]


async def test_sweeper_republishes_a_job_lost_after_a_command_commit(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(
        nats_url, pg_dsn, prefix, databases.name("dialogue"), stall_after_s=0.2, sweep_interval_s=3600
    )
    async with router(nats_url, prefix), dialogue(settings) as app, event_log(bus) as log:
        engine = app.engine
        assert engine is not None
        real_publish = engine.publish_job
        lost: list[str] = []

        async def lose_first(job) -> None:
            if not lost:
                lost.append(job.step_key)
                raise ConnectionError("publish lost")
            await real_publish(job)

        engine.publish_job = lose_first
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        assert lost == ["r1t1"] and view.status == "running"
        stuck = await get(bus, "u1", view.id)
        assert stuck.messages == [] and stuck.status == "running"
        await asyncio.sleep(0.3)  # let the discussion become older than stall_after_s
        assert await engine.sweep_once() == 1
        await log.wait_event(view.id, "round-complete")
        done = await _wait_status(bus, view.id, "waiting")
    assert [m["turn"] for m in done.messages] == [1, 2, 3]


async def test_stop_mid_turn_cancels_the_llm_call(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases) -> None:
    """Stopping a discussion while a persona is answering cuts that answer at the router (no more tokens
    are generated or charged), and the dropped step leaves no error behind."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix, tokens_per_s=20) as rapp, dialogue(settings), event_log(bus) as log:
        assert rapp.router is not None and rapp.metrics is not None
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        did = view.id
        await log.wait(lambda evs: any(e.discussionId == did and e.event == "message-chunk" for e in evs), 10)
        assert did in rapp.router.calls  # the first persona is answering (slowly: ~20 tokens/s)
        stopped = await command(bus, action="stop", user_id="u1", discussion_id=did)
        assert stopped.status == "stopped"
        for _ in range(100):
            if did not in rapp.router.calls:
                break
            await asyncio.sleep(0.02)
        assert did not in rapp.router.calls  # cancelled within ~2 s, not after the whole answer
        assert rapp.metrics.cancelled._value.get() == 1
        await asyncio.sleep(0.5)  # the step's end (dropped) has been handled
        done = await get(bus, "u1", did)
    assert done.status == "stopped" and done.error is None and done.messages == []
    assert log.of(did, "error") == [] and log.of(did, "message-complete") == []


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


async def test_a_turn_commits_in_one_statement_only_while_it_is_due(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-statement commit of a turn before the round's last (store.commit_turn) writes what the
    general commit writes, and nothing at all once the step is no longer the discussion's current one."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    quick_commits: list[str] = []
    commit_turn = store.commit_turn

    async def counted(conn, did, step_key, *args):
        ev = await commit_turn(conn, did, step_key, *args)
        if ev is not None:
            quick_commits.append(step_key)
        return ev

    monkeypatch.setattr(store, "commit_turn", counted)
    async with router(nats_url, prefix), dialogue(settings) as app, event_log(bus) as log:
        assert app.engine is not None
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete", timeout=30)
        done = await _wait_status(bus, view.id, "waiting")
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
                got = await store.commit_turn(conn, view.id, step_key, retry, stale, {"message": {}}, nj)
                assert got is None
            count = await conn.fetchval("SELECT count(*) FROM messages WHERE discussion_id = $1", view.id)
        assert count == 3
        assert await stored_events(bus, view.id) == before
        assert (await get(bus, "u1", view.id)).tokenCount == done.tokenCount


async def test_a_round_leaves_no_reference_cycles(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases) -> None:
    """A round's turns (LLM calls, commits, events; the dialogue and the router both in this process) are
    freed by reference counting: the cyclic GC, which a loaded service runs rarely, finds nothing. Each LLM
    call had left a cycle (client subscription, router retry state) that made memory grow with every turn."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix), dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete")
        await _wait_status(bus, view.id, "waiting")
        with cyclic_garbage() as found:
            await command(bus, action="proceed", user_id="u1", discussion_id=view.id)
            await log.wait_event(view.id, "round-complete", 2)
            await _wait_status(bus, view.id, "waiting")
        assert dict(found) == {}


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
        await _wait_status(bus, view.id, "waiting")
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
