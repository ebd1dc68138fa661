"""The alerts service against real NATS, Postgres and a real HTTP webhook receiver (short windows)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adp_alerts.app import AlertsApp
from adp_alerts.rules import Rule, default_rules
from adp_alerts.settings import AlertsSettings
from adp_common.bus import Bus
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.schemas.ops import BreakerChange, BudgetEvent, Heartbeat, RequestStats
from adp_common.service import ServiceRuntime
from adp_testing.inproc import running_service

from .conftest import SECRET, Receiver

MIGRATIONS = Path(__file__).parents[1] / "src" / "adp_alerts" / "migrations"


def fast_rules(**overrides: dict[str, Any]) -> list[Rule]:
    """The default rules with test-sized windows."""
    short = {
        "error_rate": {"window_s": 3},
        "latency_p95": {"window_s": 3},
        "provider_unavailable": {"window_s": 3, "min_samples": 5},
        "disk_free": {"window_s": 3},
        "memory_pressure": {"window_s": 3},
        "heartbeat_missing": {"threshold": 1.5},
    }
    out = []
    for r in default_rules():
        upd = {**short.get(r.name, {}), **overrides.get(r.name, {})}
        out.append(r.model_copy(update=upd))
    return out


def make_settings(nats_url: str, pg_dsn: str, prefix: str, db_name: str, hook: str | None, **kw: Any) -> AlertsSettings:
    base: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": pg_dsn,
        "subject_prefix": prefix,
        "database_name": db_name,
        "heartbeat_interval_s": 0.5,
        "shutdown_grace_s": 2,
        "alerts_eval_interval_s": 0.1,
        "alerts_lease_ttl_s": 1.5,
        "alerts_webhook_urls": [hook] if hook else [],
        "alerts_webhook_secret": SECRET,
        "alerts_notify_attempts": 2,
        "alerts_notify_attempt_wait_s": 0.05,
        "alerts_notify_retry_s": 0.3,
        "alerts_notify_retry_max_s": 0.6,
        "alerts_notify_poll_s": 0.2,
    }
    base.update(kw)
    return AlertsSettings(**base)


@contextlib.asynccontextmanager
async def alerts_copy(settings: AlertsSettings, rules: list[Rule]) -> AsyncIterator[tuple[AlertsApp, ServiceRuntime]]:
    app = AlertsApp(settings, rules=rules)
    async with running_service("alerts", settings, app, migrations_dir=MIGRATIONS) as rt:
        yield app, rt


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.05)


async def query(bus: Bus, **kw: Any) -> list[AlertEvent]:
    reply = await bus.request(bus.catalog.alerts_query, AlertQuery(**kw), response_model=AlertList, timeout=5)
    return reply.alerts


async def keys(bus: Bus, **kw: Any) -> set[tuple[str, str]]:
    return {(a.rule, a.subject) for a in await query(bus, **kw)}


def now() -> datetime:
    return datetime.now(UTC)


async def stats(bus: Bus, requests: int, errors: int, latency: float) -> None:
    await bus.publish_event(
        bus.catalog.ops("request-stats"),
        RequestStats(
            service="gateway",
            instance="g1",
            window_start=now() - timedelta(seconds=0.5),
            window_s=0.5,
            requests=requests,
            errors=errors,
            latencies_ms=[latency] * requests,
        ),
    )


async def beat(bus: Bus, service: str, instance: str, mem: float = 0.2, disk: float = 0.6) -> None:
    await bus.publish_event(
        bus.catalog.ops("heartbeat"),
        Heartbeat(service=service, instance=instance, memory_pressure=mem, disk_free_ratio=disk),
    )


async def budget(bus: Bus, kind: str, pct: float) -> None:
    ev = BudgetEvent(
        scope="global", day=now().date().isoformat(), kind=kind, spent_usd="9", limit_usd="10", percentage=pct
    )
    await bus.publish_event(bus.catalog.ops("budget"), ev)


async def breaker(bus: Bus, provider: str, state: str, previous: str) -> None:
    await bus.publish_event(
        bus.catalog.ops("breaker"), BreakerChange(provider=provider, state=state, previous=previous)
    )


EXPECTED = {
    ("error_rate", "gateway"),
    ("latency_p95", "gateway"),
    ("provider_unavailable", "groq"),
    ("budget_threshold", "global"),
    ("budget_exceeded", "global"),
    ("disk_free", "svc-x/x1"),
    ("memory_pressure", "svc-x/x1"),
    ("heartbeat_missing", "svc-gone"),
}


async def test_each_default_rule_fires_and_resolves(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    settings = make_settings(nats_url, pg_dsn, prefix, databases.name("alerts"), webhook.url)
    async with alerts_copy(settings, fast_rules()) as (app, _):
        await until(lambda: _true(app.lease is not None and app.lease.is_leader), what="leadership")
        # a synthetic stream crossing every rule
        await stats(bus, 40, 10, 3000.0)
        await breaker(bus, "groq", "open", "closed")
        await budget(bus, "threshold", 85)
        await budget(bus, "exceeded", 110)
        await beat(bus, "svc-x", "x1", mem=0.95, disk=0.05)
        await beat(bus, "svc-gone", "g1")
        await until(lambda: _sub(EXPECTED, keys(bus, kind="active")), what="every rule to fire")
        active = {(a.rule, a.subject): a for a in await query(bus, kind="active")}
        assert active[("error_rate", "gateway")].severity == "critical"
        assert active[("error_rate", "gateway")].value == pytest.approx(0.25)

        # the conditions clear
        await breaker(bus, "groq", "closed", "half_open")
        await budget(bus, "cleared", 50)
        await beat(bus, "svc-x", "x1", mem=0.2, disk=0.5)
        await beat(bus, "svc-gone", "g2")

        async def cleared() -> bool:
            await stats(bus, 40, 0, 100.0)  # healthy traffic while the bad window slides out
            await beat(bus, "svc-x", "x1")
            await beat(bus, "svc-gone", "g2")
            return not (EXPECTED & await keys(bus, kind="active"))

        await until(cleared, timeout=20, what="every alert to resolve")
        resolved = {(a.rule, a.subject) for a in await query(bus, kind="history", state="resolved", limit=1000)}
        assert resolved >= EXPECTED
        # one alert per (rule, subject) for the whole episode
        history = [(a.rule, a.subject) for a in await query(bus, kind="history", limit=1000)]
        for key in EXPECTED:
            assert history.count(key) == 1, key

        # every firing and resolution reached the webhook, signed
        async def all_notified() -> bool:
            got = {(r.json["alert"]["rule"], r.json["alert"]["subject"], r.json["event"]) for r in webhook.accepted()}
            return all((k[0], k[1], ev) in got for k in EXPECTED for ev in ("firing", "resolved"))

        await until(all_notified, what="webhook notifications")
        assert all(r.signature_ok for r in webhook.requests)
        assert {r.headers["x-adp-event"] for r in webhook.accepted()} >= {"firing", "resolved"}

    # and the bus carried the alert events (ALERTS stream)
    msgs = await bus.stream_messages(bus.catalog.stream_name("ALERTS"), bus.catalog.subject("alerts", "events", ">"))
    seen = {(decode(m.data).payload.rule, decode(m.data).payload.subject, m.subject.rsplit(".", 1)[1]) for m in msgs}
    for rule, subject in EXPECTED:
        assert (rule, subject, "firing") in seen and (rule, subject, "resolved") in seen


async def _true(v: bool) -> bool:
    return v


async def _sub(expected: set[tuple[str, str]], got: Awaitable[set[tuple[str, str]]]) -> bool:
    return expected <= await got


async def test_min_sample_guard_holds(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    settings = make_settings(nats_url, pg_dsn, prefix, databases.name("alerts"), webhook.url)
    rules = [r for r in fast_rules() if r.name == "error_rate"]
    async with alerts_copy(settings, rules) as (app, _):
        await until(lambda: _true(app.lease is not None and app.lease.is_leader), what="leadership")
        await stats(bus, 2, 1, 10.0)  # one failure in two requests
        start = app.evaluations
        await until(lambda: _true(app.evaluations >= start + 10), what="evaluations")
        assert await query(bus, kind="history") == []
        await stats(bus, 30, 10, 10.0)  # now enough requests
        await until(lambda: _sub({("error_rate", "gateway")}, keys(bus, kind="active")), what="firing")


async def test_long_outage_is_one_alert_with_throttled_reminders_and_ack(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    settings = make_settings(nats_url, pg_dsn, prefix, databases.name("alerts"), webhook.url)
    rules = [r for r in fast_rules(provider_unavailable={"remind_every_s": 1.0}) if r.name == "provider_unavailable"]
    async with alerts_copy(settings, rules) as (app, _):
        await until(lambda: _true(app.lease is not None and app.lease.is_leader), what="leadership")
        await breaker(bus, "groq", "open", "closed")
        await until(lambda: _sub({("provider_unavailable", "groq")}, keys(bus, kind="active")), what="firing")
        start = app.evaluations
        await until(lambda: _true(app.evaluations >= start + 30), what="many evaluation cycles")  # >= 3 s
        alerts = await query(bus, kind="history")
        assert len(alerts) == 1
        alert = alerts[0]
        await until(lambda: _true(len(webhook.accepted("reminder")) >= 2), what="reminders")
        assert len(webhook.accepted("firing")) == 1
        reminders = len(webhook.accepted("reminder"))
        assert 2 <= reminders <= 5  # ~ one per second, not one per cycle

        # acknowledgement: over the bus, published, notified, and it silences reminders
        acked = await bus.request(
            bus.catalog.alerts_ack, AckAlert(alert_id=alert.id, by="ops"), response_model=AlertEvent
        )
        assert acked.acknowledged and acked.acknowledged_by == "ops" and acked.state == "firing"
        await until(lambda: _true(len(webhook.accepted("acknowledged")) == 1), what="ack webhook")
        after_ack = len(webhook.accepted("reminder"))
        start = app.evaluations
        await until(lambda: _true(app.evaluations >= start + 15), what="more cycles")
        assert len(webhook.accepted("reminder")) <= after_ack + 1  # at most one that was already in flight
        one = await query(bus, kind="one", alert_id=alert.id)
        assert one[0].acknowledged
        with pytest.raises(PlatformError) as err:
            await bus.request(bus.catalog.alerts_ack, AckAlert(alert_id="nope"))
        assert err.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(PlatformError) as err2:
            await query(bus, kind="one", alert_id="nope")
        assert err2.value.code == ErrorCode.NOT_FOUND

    msgs = await bus.stream_messages(bus.catalog.stream_name("ALERTS"), bus.catalog.alert_event("acknowledged"))
    assert [decode(m.data).payload.id for m in msgs] == [alert.id]


async def test_failing_webhook_is_retried_recorded_then_delivered(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    settings = make_settings(nats_url, pg_dsn, prefix, databases.name("alerts"), webhook.url)
    rules = [r for r in fast_rules() if r.name == "provider_unavailable"]
    webhook.status = 500  # the receiver is down
    async with alerts_copy(settings, rules) as (app, rt):
        assert rt.pool is not None
        pool: asyncpg.Pool = rt.pool
        await until(lambda: _true(app.lease is not None and app.lease.is_leader), what="leadership")
        await breaker(bus, "mistral", "open", "closed")

        async def failed_attempts() -> int:
            return await pool.fetchval(
                "SELECT count(*) FROM deliveries d JOIN notifications n ON n.id = d.notification_id "
                "WHERE n.channel = 'webhook' AND NOT d.ok"
            )

        # several rounds of attempts, each recorded with its status
        await until(lambda: _ge(failed_attempts(), 5), what="recorded failed attempts")
        row = await pool.fetchrow("SELECT status, rounds, last_error FROM notifications WHERE channel = 'webhook'")
        assert row["status"] == "pending" and row["rounds"] >= 2 and "500" in row["last_error"]
        codes = {r["status_code"] for r in await pool.fetch("SELECT status_code FROM deliveries WHERE NOT ok")}
        assert codes == {500}
        assert webhook.accepted() == []

        webhook.status = 200  # the receiver comes back
        await until(lambda: _true(len(webhook.accepted("firing")) == 1), what="delivery after recovery")
        await until(
            lambda: _eq(pool.fetchval("SELECT status FROM notifications WHERE channel = 'webhook'"), "delivered"),
            what="delivered status",
        )
        ok = await pool.fetchval("SELECT count(*) FROM deliveries WHERE ok AND status_code = 200")
        assert ok >= 1
        assert webhook.accepted("firing")[0].signature_ok
        # every attempt carried the same body and delivery id (receivers can de-duplicate)
        assert len({r.body for r in webhook.requests}) == 1
        metrics = rt.metrics.render()[0].decode()
        assert 'adp_alerts_notifications_total{channel="webhook",result="failed"}' in metrics
        assert 'adp_alerts_firing{rule="provider_unavailable",severity="critical"} 1.0' in metrics


async def _ge(v: Awaitable[int], n: int) -> bool:
    return (await v) >= n


async def _eq(v: Awaitable[Any], want: Any) -> bool:
    return (await v) == want


async def test_two_copies_fire_each_alert_once_and_fail_over(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    db_name = databases.name("alerts")
    rules = [r for r in fast_rules() if r.name == "provider_unavailable"]
    s1 = make_settings(nats_url, pg_dsn, prefix, db_name, webhook.url, instance_id="alerts-a")
    s2 = make_settings(nats_url, pg_dsn, prefix, db_name, webhook.url, instance_id="alerts-b")
    async with alerts_copy(s1, rules) as (a, _), alerts_copy(s2, rules) as (b, _):
        await until(lambda: _true(a.lease.is_leader or b.lease.is_leader), what="a leader")
        assert not (a.lease.is_leader and b.lease.is_leader)
        providers = [f"p{i}" for i in range(6)]
        for p in providers:
            await breaker(bus, p, "open", "closed")
        expected = {("provider_unavailable", p) for p in providers}
        await until(lambda: _sub(expected, keys(bus, kind="active")), what="alerts firing")
        # both copies evaluate for a while: still one alert and one notification per provider
        start = a.evaluations + b.evaluations
        await until(lambda: _true(a.evaluations + b.evaluations >= start + 20), what="cycles")
        await until(lambda: _true(len(webhook.accepted("firing")) >= len(providers)), what="webhooks")
        fired = [r.json["alert"]["subject"] for r in webhook.accepted("firing")]
        assert sorted(fired) == providers
        history = await query(bus, kind="history", limit=1000)
        assert sorted(x.subject for x in history) == providers

        # the leader dies without releasing its lease (its loops stop): the other copy takes over
        leader, follower = (a, b) if a.lease.is_leader else (b, a)
        for t in leader._tasks:
            t.cancel()
        await until(lambda: _true(follower.lease.is_leader), timeout=10, what="failover")
        for p in providers[:3]:
            await breaker(bus, p, "closed", "open")
        await until(lambda: _true(len(webhook.accepted("resolved")) >= 3), what="resolutions from the new leader")
        resolved = sorted(r.json["alert"]["subject"] for r in webhook.accepted("resolved"))
        assert resolved == providers[:3]
        assert len(webhook.accepted("firing")) == len(providers)


async def test_split_brain_is_caught_by_the_database_guard(
    bus: Bus, nats_url: str, pg_dsn: str, prefix: str, databases: Any, webhook: Receiver
) -> None:
    """Both copies believe they lead (e.g. a paused leader wakes up after its lease expired): the partial
    unique index and the compare-and-set updates still let each change happen once."""
    db_name = databases.name("alerts")
    rules = [r for r in fast_rules(provider_unavailable={"remind_every_s": 0.5}) if r.name == "provider_unavailable"]
    s1 = make_settings(nats_url, pg_dsn, prefix, db_name, webhook.url, instance_id="alerts-a")
    s2 = make_settings(nats_url, pg_dsn, prefix, db_name, webhook.url, instance_id="alerts-b")
    async with alerts_copy(s1, rules) as (a, _), alerts_copy(s2, rules) as (b, _):
        for app in (a, b):
            assert app.lease is not None
            next(t for t in app._tasks if t.get_name() == "alerts-lease").cancel()
            app.lease.revision, app.lease._valid_until = 1, float("inf")  # forced leader
        providers = [f"q{i}" for i in range(5)]
        for p in providers:
            await breaker(bus, p, "open", "closed")
        await until(lambda: _true(len(webhook.accepted("firing")) >= len(providers)), what="firing webhooks")
        await until(lambda: _true(len(webhook.accepted("reminder")) >= 4), what="reminders")
        for p in providers:
            await breaker(bus, p, "closed", "open")
        await until(lambda: _true(len(webhook.accepted("resolved")) >= len(providers)), what="resolved webhooks")
        start = a.evaluations + b.evaluations
        await until(lambda: _true(a.evaluations + b.evaluations >= start + 10), what="cycles")
        assert sorted(r.json["alert"]["subject"] for r in webhook.accepted("firing")) == providers
        assert sorted(r.json["alert"]["subject"] for r in webhook.accepted("resolved")) == providers
        assert len({r.json["id"] for r in webhook.accepted("reminder")}) == len(webhook.accepted("reminder"))
        assert len(await query(bus, kind="history", limit=1000)) == len(providers)


@pytest.mark.slow
async def test_leader_process_killed_follower_takes_over(bus: Bus, processes: Any, webhook: Receiver) -> None:
    """Two real alerts processes; SIGKILL the leader; the survivor evaluates and notifies, nothing twice."""
    import json

    import httpx

    overrides = [{"name": r.name, "enabled": False} for r in default_rules() if r.name != "provider_unavailable"]
    overrides.append({"name": "provider_unavailable", "window_s": 3})
    env = {
        "ADP_ALERTS_RULES": json.dumps(overrides),
        "ADP_ALERTS_EVAL_INTERVAL_S": "0.2",
        "ADP_ALERTS_LEASE_TTL_S": "1.5",
        "ADP_ALERTS_WEBHOOK_URLS": webhook.url,
        "ADP_ALERTS_WEBHOOK_SECRET": SECRET,
        "ADP_ALERTS_NOTIFY_POLL_S": "0.2",
    }
    procs = await processes.start_healthy(["alerts"], replicas=2, extra_env=env)

    async def leader_of() -> Any:
        async with httpx.AsyncClient(timeout=2) as client:
            for p in procs:
                if p.alive():
                    r = await client.get(p.url + "/health")
                    if r.json()["info"].get("leader"):
                        return p
        return None

    holder: list[Any] = []

    async def has_leader() -> bool:
        holder[:] = [await leader_of()]
        return holder[0] is not None

    await until(has_leader, what="a leader process")
    await breaker(bus, "before", "open", "closed")
    await until(lambda: _true(len(webhook.accepted("firing")) == 1), what="first alert")
    processes.kill(holder[0])
    await breaker(bus, "after", "open", "closed")
    await breaker(bus, "before", "closed", "open")
    await until(lambda: _true(len(webhook.accepted("resolved")) == 1), timeout=20, what="resolution by survivor")
    await until(lambda: _true(len(webhook.accepted("firing")) == 2), timeout=20, what="new alert by survivor")
    assert sorted(r.json["alert"]["subject"] for r in webhook.accepted("firing")) == ["after", "before"]
    assert [r.json["alert"]["subject"] for r in webhook.accepted("resolved")] == ["before"]
    assert all(r.signature_ok for r in webhook.requests)


async def test_facts_keep_arriving_after_the_nats_server_restarts(
    pg_dsn: str, prefix: str, databases: Any, tmp_path: Path
) -> None:
    """Alerts replays facts from a start time; after a NATS restart its consumers are recreated and must go on
    delivering (before, the recreated consumer carried both a start sequence and the start time, which the
    server refuses, and no fact ever arrived again)."""
    from adp_cli.servers import free_port, start_embedded_nats

    port = free_port()
    server = await asyncio.to_thread(start_embedded_nats, tmp_path / "nats", port)
    settings = make_settings(server.url, pg_dsn, prefix, databases.name("alerts"), None)
    try:
        async with alerts_copy(settings, fast_rules()) as (app, _):
            bus = await Bus.connect(server.url, prefix=prefix, name="test")

            def seen() -> float:
                return app.m_facts.labels("RequestStats")._value.get()

            async def arrived(n: float) -> bool:
                return seen() >= n

            try:
                await stats(bus, 10, 0, 5.0)
                await until(lambda: arrived(1), what="the first fact")
                await asyncio.to_thread(server.stop)
                server = await asyncio.to_thread(start_embedded_nats, tmp_path / "nats", port)
                await until(lambda: wait_for_connection(bus), timeout=20, what="reconnected")
                for _ in range(40):  # the consumers notice the restart from missed heartbeats (seconds)
                    await stats(bus, 10, 0, 5.0)
                    if seen() >= 2:
                        break
                    await asyncio.sleep(1)
                assert seen() >= 2, "no fact arrived after the restart"
            finally:
                await bus.close(grace=1)
    finally:
        await asyncio.to_thread(server.stop)


async def wait_for_connection(bus: Bus) -> bool:
    return bus.connected
