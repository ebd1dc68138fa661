"""Chaos: two copies of every service, a few discussions in auto mode, and one copy of each service killed
with SIGKILL mid-turn (dialogue first, while it streams). Every discussion must finish with its full, gapless
turn sequence; every message must reach an SSE follower (reconnecting with Last-Event-ID) exactly once; the
ledger must hold exactly one `ok` charge per persona message; and no discussion may wait more than ~10 s
because of a kill. Prints the stall per kill and how many LLM calls the routers replayed or joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import pytest_asyncio

from adp_cli.procs import Proc
from adp_common.db import with_database
from adp_common.schemas.dialogue import TERMINAL_EVENT_NAMES
from adp_testing.fake_provider import FakeProvider, Timing
from adp_testing.platform import EventLog, Platform, running_platform

pytestmark = pytest.mark.slow

DISCUSSIONS = 4
ROUNDS = 3
PERSONAS = 3  # the default cast
MAX_STALL_S = 10.5
ANSWER = " ".join(f"word{i}" for i in range(60))  # ~3 s per turn at 50 ms a token


@dataclass
class Kill:
    service: str
    at: float
    stall_s: float = 0.0


@pytest_asyncio.fixture(loop_scope="session")
async def platform(nats_url: str, pg_dsn: str) -> AsyncIterator[Platform]:
    async with FakeProvider(timing=Timing(ttft_s=0.05, token_interval_s=0.05, text=ANSWER)) as fake:
        providers = {"fake": {"kind": "openai", "base_url": fake.openai_base, "api_key": "k", "models": ["m"]}}
        env = {
            "ADP_ROUTER_SIMULATED": "never",
            "ADP_ROUTER_PROVIDERS": json.dumps(providers),
            "ADP_ROUTER_ROUTES": json.dumps({r: ["fake/m"] for r in ("analyzer", "solver", "moderator", "default")}),
            "ADP_COST_PRICE_FAKE": "1.00,2.00",
            "ADP_AUTO_QUESTIONS": "false",
            "ADP_MAX_CONTINUATIONS": "0",
            "ADP_COST_ACK_WAIT_S": "3",
        }
        async with running_platform(nats_url, pg_dsn, replicas=2, env=env) as p:
            yield p


def finished_at(log: EventLog) -> float | None:
    for ev, at in zip(log.events, log.times, strict=True):
        if ev.get("event") in TERMINAL_EVENT_NAMES:
            return at
    return None


def progressed(log: EventLog, since: float) -> bool:
    """The discussion is over, or stored something new (a durable event) after `since`."""
    if finished_at(log) is not None:
        return True
    return any(t > since and "id" in ev for t, ev in zip(log.times, log.events, strict=True))


async def create(p: Platform, key: str, body: dict[str, object]) -> str:
    async with p.client(key) as c:
        r = await c.post("/api/discussions", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def streaming(log: EventLog, since: float) -> dict[str, int] | None:
    """The turn a discussion is streaming right now (a chunk arrived after `since`), else None."""
    for ev, at in zip(reversed(log.events), reversed(log.times), strict=True):
        if at < since:
            return None
        if ev.get("event") == "message-chunk":
            return {"round": ev["data"]["round"], "turn": ev["data"]["turn"]}
    return None


def runner_of(p: Platform, did: str, turn: dict[str, int]) -> Proc | None:
    """The dialogue copy that runs this turn of the discussion (its log says so)."""
    position = turn["turn"] - (turn["round"] - 1) * PERSONAS
    line = f"running step r{turn['round']}t{position} of {did}"
    found = [c for c in p.copies("dialogue") if c.log_path and line in c.log_path.read_text(errors="replace")]
    return found[0] if len(found) == 1 else None


def stall(log: EventLog, at: float, until: float) -> float:
    """The longest a discussion went without news after a kill at `at`: the longest gap between arrivals in
    [at, until], not counting chunks of the answer the kill interrupted (they arrive until the router
    notices its caller is gone, and that answer is restarted)."""
    arrivals = [(t, ev) for t, ev in zip(log.times, log.events, strict=True) if at < t <= until]
    restarts = [t for t, ev in arrivals if ev.get("event") == "message-start" and ev["data"].get("restart")]
    cut = restarts[0] if restarts else at
    times = [at] + [t for t, ev in arrivals if not (ev.get("event") == "message-chunk" and t < cut)]
    end = finished_at(log)
    if end is not None and end <= until:
        until = end
    times.append(until)
    return max(b - a for a, b in itertools.pairwise(times))


async def busy_router(p: Platform) -> Proc | None:
    """A router copy with calls in flight (its /metrics says so)."""
    async with httpx.AsyncClient(timeout=2) as http:
        for copy in p.copies("llm-router"):
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get(copy.url + "/metrics")).text
                inflight = re.search(r"^adp_router_inflight_requests (\S+)", text, re.MULTILINE)
                if inflight and float(inflight.group(1)) > 0:
                    return copy
    return None


async def kill_mid_turn(p: Platform, logs: dict[str, EventLog], service: str) -> Kill:
    """SIGKILL one copy of `service` while a discussion streams (the dialogue copy running that turn, a
    router copy with calls in flight)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = time.monotonic()
        for did, log in logs.items():
            turn = streaming(log, now - 0.3)
            if turn is None:
                continue
            if service == "dialogue":
                victim = runner_of(p, did, turn)
            elif service == "llm-router":
                victim = await busy_router(p)
            else:
                victim = p.copies(service)[0]
            if victim is not None:
                p.kill(victim)
                return Kill(service, time.monotonic())
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no discussion streamed to kill {service} under")


async def test_one_copy_of_each_service_killed_mid_turn(platform: Platform) -> None:
    p = platform
    _, key = await p.new_user("chaos")
    logs: dict[str, EventLog] = {}
    for i in range(DISCUSSIONS):
        body = {"topic": f"Plan a rollout of feature {i} to three regions.", "max_rounds": ROUNDS, "auto": True}
        did = await create(p, key, body)
        logs[did] = EventLog(p, key, did).start()
    kills: list[Kill] = []
    try:
        for service in ("dialogue", "llm-router", "cost", "alerts", "gateway"):
            kill = await kill_mid_turn(p, logs, service)
            kills.append(kill)
            # let every discussion show progress again before the next kill
            for log in logs.values():
                await log.wait_until(
                    lambda log=log, since=kill.at + 0.5: progressed(log, since),
                    timeout=30,
                    what=f"progress after the {service} kill",
                )
        for log in logs.values():
            await log.wait_until(lambda log=log: finished_at(log) is not None, timeout=120, what="discussion end")
    finally:
        for log in logs.values():
            await log.stop()
    ends = [*(k.at for k in kills[1:]), time.monotonic()]
    for kill, end in zip(kills, ends, strict=True):
        kill.stall_s = max(stall(log, kill.at, end) for log in logs.values())
    replayed = sum(len(re.findall(r"request \S+ (replayed|joined) the result", c.log_tail(100000))) for c in routers(p))
    print("\nstall per kill: " + ", ".join(f"{k.service} {k.stall_s:.1f} s" for k in kills))
    print(f"LLM calls replayed or joined: {replayed}")

    async with p.client(key) as c:
        views = {did: (await c.get(f"/api/discussions/{did}")).json() for did in logs}
    for did, view in views.items():
        assert view["status"] == "completed", (did, view["status"])
        turns = [m["turn"] for m in view["messages"]]
        assert turns == list(range(1, ROUNDS * PERSONAS + 1)), turns  # gapless, each once
        completed = [e["data"]["message"]["id"] for e in logs[did].named("message-complete")]
        assert sorted(completed) == sorted(m["id"] for m in view["messages"]), "each message reached SSE once"
    assert sum(log.reconnects for log in logs.values()) >= 1, "the gateway kill should have cut followers off"
    await assert_one_ok_charge_per_message(p, views)
    slow = [k for k in kills if k.stall_s > MAX_STALL_S]
    assert not slow, slow


def routers(p: Platform) -> list[Proc]:
    return [c for c in p.started if c.service == "llm-router"]


async def assert_one_ok_charge_per_message(p: Platform, views: dict[str, dict]) -> None:
    """Exactly one `ok` usage record per persona message (the surviving cost copy catches up in seconds)."""
    want = {did: len(v["messages"]) for did, v in views.items()}
    conn = await asyncpg.connect(with_database(p.procs.pg_dsn, f"cost_{p.prefix}"))
    try:
        for _ in range(60):
            rows = await conn.fetch(
                "SELECT discussion_id, count(*) AS n FROM usage_ledger WHERE status = 'ok' GROUP BY discussion_id"
            )
            got = {r["discussion_id"]: r["n"] for r in rows}
            if got == want:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    assert got == want
