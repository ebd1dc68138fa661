"""The platform on a three-server JetStream cluster (every stream and bucket with three replicas), two copies
of every service as processes, LLM calls served by a fake provider (real HTTP):

- the server leading the dialogue step stream is killed (SIGKILL) while discussions stream;
- all three servers are restarted one at a time under a steady load of discussions and OpenAI-compatible calls;
- one server is frozen (SIGSTOP) for 20 s, as a network partition looks to its peers and clients.

Each checks that nothing is lost, duplicated or charged twice, and prints the figures docs/architecture.md
quotes (run with `-s` to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from adp_cli.nats_cluster import NatsCluster, NatsNode, start_nats_cluster
from adp_common.catalog import Catalog
from adp_testing.fake_provider import FakeProvider, Timing
from adp_testing.platform import ADMIN_KEY, EventLog, Platform, running_platform

pytestmark = pytest.mark.slow

TURNS = 3  # per round: the three default personas
FREEZE_S = 20.0
GIVEN_UP_S = 6.0  # a frozen server is given up after 3-4 s of unanswered pings (adp_common.bus, the servers), + slack
STEP_STREAM = "DIALOGUE_WORK"


@dataclass
class Stack:
    platform: Platform
    cluster: NatsCluster
    fake: FakeProvider


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(pg_dsn: str) -> AsyncIterator[Stack]:
    store = Path(tempfile.mkdtemp(prefix="adp-e2e-nats-cluster-"))
    cluster = await asyncio.to_thread(start_nats_cluster, 3, store, log_dir=store / "logs")
    try:
        async with FakeProvider(timing=Timing(ttft_s=0.05, token_interval_s=0.04)) as fake:
            providers = {"fake": {"kind": "openai", "base_url": fake.openai_base, "api_key": "k", "models": ["f-1"]}}
            env = {
                "ADP_STREAM_REPLICAS": "3",
                "ADP_ROUTER_SIMULATED": "never",
                "ADP_ROUTER_PROVIDERS": json.dumps(providers),
                "ADP_ROUTER_ROUTES": json.dumps(
                    {r: ["fake/f-1"] for r in ("analyzer", "solver", "moderator", "default")}
                ),
                "ADP_COST_PRICE_FAKE": "1.00,2.00",
                "ADP_STEP_ACK_WAIT_S": "3",
                "ADP_STEP_PROGRESS_S": "1",
                "ADP_COST_ACK_WAIT_S": "3",
                "ADP_AUTO_QUESTIONS": "false",
                "ADP_MAX_CONTINUATIONS": "0",
            }
            async with running_platform(cluster.url, pg_dsn, replicas=2, env=env) as p:
                yield Stack(p, cluster, fake)
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(store, ignore_errors=True)


# ---- discussions and what their followers saw -------------------------------------------------------------
@dataclass
class Followed:
    did: str
    logs: list[EventLog]  # one follower starting on each gateway

    def done(self, rounds: int) -> bool:
        return all(len(log.named("round-complete")) >= rounds for log in self.logs)


async def start_discussion(p: Platform, key: str, rounds: int, topic: str) -> Followed:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with p.client(key) as c:
                r = await c.post("/api/discussions", json={"topic": topic, "max_rounds": rounds, "auto": True})
            assert r.status_code == 201, r.text
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    did = r.json()["id"]
    logs = []
    for gateway in range(2):
        log = EventLog(p, key, did)
        log.gateway = gateway
        logs.append(log.start())
    return Followed(did, logs)


async def wait_done(runs: list[Followed], rounds: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.done(rounds) for r in runs):
        if time.monotonic() > deadline:
            seen = {r.did: [len(log.named("round-complete")) for log in r.logs] for r in runs}
            raise AssertionError(f"discussions not finished in {timeout:g}s (rounds seen per follower): {seen}")
        await asyncio.sleep(0.2)


async def check_discussion(p: Platform, key: str, run: Followed, rounds: int) -> None:
    """Every turn stored once; every follower saw every durable event once, in order, and every stored
    message complete exactly once; no error event."""
    async with p.client(key) as c:
        view = (await c.get(f"/api/discussions/{run.did}")).json()
    turns = [(m["round"], m["turn"]) for m in view["messages"]]
    assert len(turns) == len(set(turns)) == rounds * TURNS, turns
    stored = sorted(m["id"] for m in view["messages"])
    for log in run.logs:
        ids = log.durable_ids()
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"a durable event lost or repeated: {ids}"
        completed = [e["data"]["message"]["id"] for e in log.named("message-complete")]
        assert sorted(completed) == stored
        assert not log.named("error"), log.named("error")
    assert run.logs[0].durable_ids() == run.logs[1].durable_ids()


async def stop_all(runs: list[Followed]) -> None:
    for run in runs:
        for log in run.logs:
            await log.stop()


async def ledger_tokens(p: Platform) -> tuple[int, int]:
    async with p.client(ADMIN_KEY) as admin:
        rows = (await admin.get("/api/costs")).json()["costByProvider"]
    return sum(r["input_tokens"] for r in rows), sum(r["output_tokens"] for r in rows)


async def check_ledger(p: Platform, fake: FakeProvider) -> None:
    """Nothing charged twice, nothing lost: the ledger equals what the provider served (a call the client library
    re-sent while its router copy seemed lost joins the running call: the provider is called once)."""
    got: tuple[int, int] = (0, 0)
    for _ in range(60):
        expected = (fake.stats.input_tokens, fake.stats.output_tokens)
        if (got := await ledger_tokens(p)) == expected:
            return
        await asyncio.sleep(0.5)
    assert got == expected, f"ledger {got} != provider {expected}"


def stall_after(runs: list[Followed], at: float) -> tuple[float, float]:
    """(platform stall, longest wait in one discussion) after `at`: the longest time in which no follower of
    any discussion received an event, and the longest gap between two events of one follower — both from the
    last event before `at` until the first discussion finished."""
    logs = [log for r in runs for log in r.logs]
    ends = [log.times[-1] for log in logs if log.times]
    horizon = min(ends) if ends else at
    merged = sorted(t for log in logs for t in log.times if t <= horizon)
    before = [t for t in merged if t <= at]
    window = [before[-1] if before else at, *(t for t in merged if t > at)]
    stall = max((b - a for a, b in itertools.pairwise(window)), default=0.0)
    longest = 0.0
    for log in logs:
        times = [t for t in log.times if t > at]
        prior = [t for t in log.times if t <= at]
        times = prior[-1:] + times
        longest = max(longest, *(b - a for a, b in itertools.pairwise(times)), 0.0)
    return stall, longest


def step_stream(p: Platform) -> str:
    return Catalog(p.prefix).stream_name(STEP_STREAM)


async def leader_of(cluster: NatsCluster, stream: str) -> NatsNode:
    deadline = time.monotonic() + 20
    while (name := await asyncio.to_thread(cluster.stream_leader, stream)) is None:
        assert time.monotonic() < deadline, f"no leader reported for {stream}"
        await asyncio.sleep(0.3)
    return cluster.node(name)


# ---- the tests ----------------------------------------------------------------------------------------------
async def test_killing_the_step_stream_leader_loses_nothing(stack: Stack) -> None:
    p, cluster = stack.platform, stack.cluster
    _, key = await p.new_user("leader-kill")
    rounds = 2
    runs = [await start_discussion(p, key, rounds, f"Plan a cache layer, take {i}.") for i in range(4)]
    try:
        for run in runs:
            await run.logs[0].wait_for("message-chunk", 1, timeout=60)
        leader = await leader_of(cluster, step_stream(p))
        killed_at = time.monotonic()
        await asyncio.to_thread(leader.kill)
        await wait_done(runs, rounds, timeout=120)
        stall, longest = stall_after(runs, killed_at)
        print(
            f"\nleader kill ({leader.name}): platform stall {stall:.2f} s, "
            f"longest wait in one discussion {longest:.2f} s"
        )
        for run in runs:
            await check_discussion(p, key, run, rounds)
        assert stall < 20, f"the platform stalled {stall:.1f} s after the leader was killed"
    finally:
        await stop_all(runs)
        for node in cluster.nodes:
            if not node.alive():
                await asyncio.to_thread(cluster.restart, node)
    await check_ledger(p, stack.fake)


@dataclass
class Failure:
    started: float  # time.monotonic() when the failed request was sent
    what: str


@dataclass
class Load:
    """A steady load through the gateways: discussions one after another per user, and OpenAI-compatible calls
    (plain and streamed) one after another per caller. Every failed client request is recorded."""

    p: Platform
    key: str
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    failures: list[Failure] = field(default_factory=list)
    discussions: int = 0
    calls: int = 0
    slowest_s: float = 0.0  # the longest OpenAI call or discussion creation
    runs: list[Followed] = field(default_factory=list)

    async def discussions_loop(self, n: int) -> None:
        while not self.stopping.is_set():
            t0 = time.monotonic()
            try:
                run = await start_discussion(self.p, self.key, 1, f"Pick a queue for job {n}-{self.discussions}.")
            except (AssertionError, httpx.HTTPError) as err:
                self.failures.append(Failure(t0, f"create: {str(err)[:200]}"))
                continue
            self.slowest_s = max(self.slowest_s, time.monotonic() - t0)
            self.runs.append(run)
            try:
                await wait_done([run], 1, timeout=90)
                self.discussions += 1
            except AssertionError as err:
                self.failures.append(Failure(t0, f"discussion {run.did}: {err}"))
            finally:
                for log in run.logs:
                    await log.stop()

    async def calls_loop(self, n: int) -> None:
        body = {"model": "default", "messages": [{"role": "user", "content": f"caller {n}: say hi"}]}
        while not self.stopping.is_set():
            stream = self.calls % 2 == 1
            what = "streamed call" if stream else "call"
            t0 = time.monotonic()
            try:
                async with self.p.client(self.key, gateway=n % 2, timeout=60) as c:
                    if stream:
                        async with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                            text = "".join([line async for line in r.aiter_lines()])
                        ok = r.status_code == 200 and "[DONE]" in text and '"error"' not in text
                    else:
                        r = await c.post("/v1/chat/completions", json=body)
                        text, ok = r.text, r.status_code == 200
                if not ok:
                    # a stream's end says why it failed (its error event, or no [DONE])
                    self.failures.append(Failure(t0, f"{what}: {r.status_code} {text[:120]} … {text[-400:]}"))
            except httpx.HTTPError as err:
                self.failures.append(Failure(t0, f"{what}: {type(err).__name__} {err}"))
            self.calls += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - t0)

    @contextlib.asynccontextmanager
    async def running(self, discussion_users: int = 2, callers: int = 2) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self.discussions_loop(i)) for i in range(discussion_users)]
        tasks += [asyncio.create_task(self.calls_loop(i)) for i in range(callers)]
        try:
            yield self
        finally:
            self.stopping.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
            now = time.monotonic()
            self.failures += [Failure(now, f"load: {err!r}") for err in results if isinstance(err, BaseException)]

    def summary(self) -> str:
        return (
            f"{self.discussions} discussions, {self.calls} OpenAI calls, {len(self.failures)} failed, "
            f"slowest call or creation {self.slowest_s:.2f} s"
        )


async def test_rolling_restart_of_every_server_fails_no_request(stack: Stack) -> None:
    p, cluster = stack.platform, stack.cluster
    _, key = await p.new_user("rolling")
    load = Load(p, key)
    t0 = time.monotonic()
    async with load.running():
        await asyncio.sleep(3)
        for node in cluster.nodes:
            await asyncio.to_thread(node.stop)
            await asyncio.sleep(2)
            await asyncio.to_thread(cluster.restart, node)
            await asyncio.sleep(3)
    print(f"\nrolling restart ({time.monotonic() - t0:.0f} s): {load.summary()}")
    assert not load.failures, load.failures[:10]
    assert load.discussions >= 2 and load.calls >= 10
    for run in load.runs[: load.discussions]:
        if run.done(1):
            await check_discussion(p, key, run, 1)
    await check_ledger(p, stack.fake)


async def test_a_frozen_server_leaves_the_majority_serving(stack: Stack) -> None:
    """The step stream's leader stops answering for 20 s. Its peers and clients give it up after 3-4 s of
    unanswered pings; requests already sent through it then are lost with it (a clean 503 once the request
    times out), and every request sent after that is served by the other two servers."""
    p, cluster = stack.platform, stack.cluster
    _, key = await p.new_user("partition")
    frozen = await leader_of(cluster, step_stream(p))
    load = Load(p, key)
    frozen_at = time.monotonic()
    frozen.signal(signal.SIGSTOP)
    try:
        async with load.running():
            await asyncio.sleep(FREEZE_S)
    finally:
        frozen.signal(signal.SIGCONT)
    lost = [f for f in load.failures if f.started < frozen_at + GIVEN_UP_S]
    print(
        f"\nfrozen server ({frozen.name}, {FREEZE_S:g} s): {load.summary()}, "
        f"{len(lost)} of them sent in the first {GIVEN_UP_S:g} s"
    )
    assert [f.what for f in load.failures if f not in lost] == []
    assert load.discussions >= 2 and load.calls >= 10
    await asyncio.to_thread(cluster.wait_ready)
    runs = [await start_discussion(p, key, 1, "After the partition healed.")]
    try:
        await wait_done(runs, 1, timeout=60)
        await check_discussion(p, key, runs[0], 1)
    finally:
        await stop_all(runs)
    await check_ledger(p, stack.fake)
