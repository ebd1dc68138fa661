"""The step engine over the bus: failures and retries, crashes between commit and publish, replays, copies
sharing and taking over work, the sweeper."""

from __future__ import annotations

import asyncio
import time

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
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_dialogue.settings import DialogueSettings
from adp_testing.garbage import cyclic_garbage


async def test_router_errors_leave_the_discussion_resumable(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)  # no router is running
        did = view.id
        err = await log.wait_event(did, "error")
        assert err.data["code"] == "NO_LLM_PROVIDER_AVAILABLE"
        failed = await wait_status(bus, did, "waiting")
        assert failed.error and failed.error["code"] == "NO_LLM_PROVIDER_AVAILABLE" and failed.messages == []
        with pytest.raises(PlatformError) as blocked:
            await command(bus, action="input", user_id="u1", discussion_id=did, input="hello there")
        assert blocked.value.code == ErrorCode.CONFLICT
        async with router(nats_url, prefix):
            resumed = await command(bus, action="proceed", user_id="u1", discussion_id=did)
            assert resumed.status == "running" and resumed.error is None and resumed.currentRound == 1
            await log.wait_event(did, "round-complete")
            done = await wait_status(bus, did, "waiting")
    assert [m["turn"] for m in done.messages] == [1, 2, 3] and done.error is None


async def test_a_step_failing_past_its_attempts_fails_the_discussion(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases
) -> None:
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"), max_step_attempts=2)
    async with dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)  # no router is running
        did = view.id
        await log.wait_event(did, "error")
        await wait_status(bus, did, "waiting")
        await command(bus, action="proceed", user_id="u1", discussion_id=did)
        ended = await log.wait_event(did, "discussion-failed")
        failed = await wait_status(bus, did, "failed")
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
        done = await wait_status(bus, view.id, "waiting")
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
        done = await wait_status(bus, view.id, "waiting")
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
            views = [await wait_status(bus, did, "completed", user=f"u{i}") for i, did in enumerate(ids)]
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
        assert taken_over_s < DialogueSettings.model_fields["step_ack_wait_s"].default + 2.5, taken_over_s
        await log.wait_event(did, "round-complete", 2, timeout=60)
        done = await wait_status(bus, did, "completed")
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
        done = await wait_status(bus, view.id, "waiting")
    assert [m["turn"] for m in done.messages] == [1, 2, 3]


async def test_a_round_leaves_no_reference_cycles(bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases) -> None:
    """A round's turns (LLM calls, commits, events; the dialogue and the router both in this process) are
    freed by reference counting: the cyclic GC, which a loaded service runs rarely, finds nothing. Each LLM
    call had left a cycle (client subscription, router retry state) that made memory grow with every turn."""
    settings = dialogue_settings(nats_url, pg_dsn, prefix, databases.name("dialogue"))
    async with router(nats_url, prefix), dialogue(settings), event_log(bus) as log:
        view = await command(bus, action="create", user_id="u1", topic=TOPIC)
        await log.wait_event(view.id, "round-complete")
        await wait_status(bus, view.id, "waiting")
        with cyclic_garbage() as found:
            await command(bus, action="proceed", user_id="u1", discussion_id=view.id)
            await log.wait_event(view.id, "round-complete", 2)
            await wait_status(bus, view.id, "waiting")
        assert dict(found) == {}
