"""The alerts service shell: wires the bus, the database, the lease and the notifiers to the rule engine.

Design (see docs/alerts.md):
- Every copy reads the OPS (and USAGE) streams with its own ephemeral ordered consumer, starting
  `ADP_ALERTS_REPLAY_S` in the past, so every copy holds the same warm state and a new leader (after a
  failover or a restart) judges from the same history.
- Only the holder of the KV lease `leases/<key>` evaluates and changes alerts. Each change is also a
  compare-and-set in Postgres (partial unique index: one firing alert per (rule, subject)), a second guard
  for the moment two copies might both believe they lead.
- Notifications are written to an outbox in the same transaction as the change; the dispatcher of every
  copy delivers them (bus event, log line, signed webhooks), records each attempt and retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge

from adp_alerts import store
from adp_alerts.engine import Action, Engine, FiringAlert
from adp_alerts.lease import LeaderLease
from adp_alerts.notify import (
    BusChannel,
    Channel,
    Dispatcher,
    DispatchPolicy,
    LogChannel,
    WebhookChannel,
    notifications_for,
)
from adp_alerts.rules import Rule, load_rules
from adp_alerts.settings import AlertsSettings
from adp_alerts.store import AlertRow, NotificationRow
from adp_common.bus import RequestContext
from adp_common.catalog import KV_LEASES
from adp_common.envelope import decode
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.service import ServiceRuntime

log = logging.getLogger("adp.alerts")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AlertsApp:
    def __init__(self, settings: AlertsSettings, *, clock: Clock = _utcnow, rules: list[Rule] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.rules = rules
        self.rt: ServiceRuntime | None = None
        self.engine: Engine | None = None
        self.lease: LeaderLease | None = None
        self.dispatcher: Dispatcher | None = None
        self.channels: list[Channel] = []
        self.caught_up = asyncio.Event()
        self._subs: list[JetStreamContext.PushSubscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._http: httpx.AsyncClient | None = None
        self._eval_lock = asyncio.Lock()
        self.evaluations = 0

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self, rt: ServiceRuntime) -> None:
        s = self.settings
        self.rt = rt
        assert rt.bus is not None and rt.pool is not None
        bus = rt.bus
        if self.rules is None:
            try:
                self.rules = load_rules(s.alerts_rules_file, s.alerts_rules)
            except (OSError, ValueError) as err:
                raise SystemExit(f"ADP_ALERTS_RULES_FILE / ADP_ALERTS_RULES: {err}") from None
        self.engine = Engine(self.rules, expected_services=set(s.alerts_expected_services), started_at=self.clock())
        self._metrics(rt)

        self._http = httpx.AsyncClient(timeout=httpx.Timeout(s.alerts_webhook_timeout_s))
        secret = s.alerts_webhook_secret.get_secret_value() if s.alerts_webhook_secret else None
        self.channels = [BusChannel(bus), LogChannel()]
        for url in s.alerts_webhook_urls:
            self.channels.append(
                WebhookChannel(url, self._http, secret=secret, events=frozenset(s.alerts_webhook_events))
            )
        policy = DispatchPolicy(
            attempts_per_round=s.alerts_notify_attempts,
            attempt_wait_s=s.alerts_notify_attempt_wait_s,
            round_backoff_s=s.alerts_notify_retry_s,
            round_backoff_max_s=s.alerts_notify_retry_max_s,
            max_age_s=s.alerts_notify_max_age_s,
            claim_s=max(60.0, s.alerts_webhook_timeout_s * s.alerts_notify_attempts * 2 + 10),
        )
        self.dispatcher = Dispatcher(
            rt.pool, self.channels, policy, instance=rt.instance, poll_s=s.alerts_notify_poll_s, on_result=self._count
        )
        self.dispatcher.start()

        kv = await bus.kv(KV_LEASES)
        self.lease = LeaderLease(kv, s.alerts_lease_key, rt.instance, ttl_s=s.alerts_lease_ttl_s)

        await self._subscribe()
        await bus.serve(bus.catalog.alerts_query, self._query, AlertQuery, name="query")
        await bus.serve(bus.catalog.alerts_ack, self._ack, AckAlert, name="ack")
        self._tasks += [
            asyncio.create_task(self._lease_loop(), name="alerts-lease"),
            asyncio.create_task(self._eval_loop(), name="alerts-eval"),
        ]
        rt.checks.info["rules"] = [r.name for r in self.engine.rules]
        rt.checks.info["webhooks"] = len(s.alerts_webhook_urls)

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.lease is not None:
            await self.lease.release()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self._http is not None:
            await self._http.aclose()

    # ---- metrics ----------------------------------------------------------------------------------
    def _metrics(self, rt: ServiceRuntime) -> None:
        reg = rt.metrics.registry
        self.m_firing = Gauge("adp_alerts_firing", "Alerts firing now", ["rule", "severity"], registry=reg)
        self.m_notifications = Counter(
            "adp_alerts_notifications", "Notification deliveries by outcome", ["channel", "result"], registry=reg
        )
        self.m_transitions = Counter(
            "adp_alerts_transitions", "Alert lifecycle changes", ["rule", "transition"], registry=reg
        )
        self.m_facts = Counter("adp_alerts_facts", "Facts read from the streams", ["type"], registry=reg)
        self.m_leader = Gauge("adp_alerts_leader", "1 when this copy holds the evaluation lease", registry=reg)

    def _count(self, n: NotificationRow, ok: bool) -> None:
        self.m_notifications.labels(n.channel, "sent" if ok else "failed").inc()

    def _set_firing_gauge(self, rows: list[AlertRow]) -> None:
        self.m_firing.clear()
        assert self.engine is not None
        for r in self.engine.rules:
            self.m_firing.labels(r.name, r.severity).set(0)
        for row in rows:
            self.m_firing.labels(row.rule, row.severity).inc()

    # ---- facts ------------------------------------------------------------------------------------
    async def _subscribe(self) -> None:
        assert self.rt is not None and self.rt.bus is not None
        bus = self.rt.bus
        s = self.settings
        start = self.clock() - timedelta(seconds=s.alerts_replay_s)
        sources = [("OPS", bus.catalog.subject("ops", ">"))]
        if s.alerts_consume_usage:
            sources.append(("USAGE", bus.catalog.usage_record))

        def make_cb() -> Callable[[Msg], Awaitable[None]]:
            async def on_msg(msg: Msg) -> None:
                try:
                    payload = decode(msg.data).payload
                except Exception as err:
                    log.warning("undecodable fact on %s: %s", msg.subject, err)
                    return
                if self.engine is not None and self.engine.observe(payload):
                    self.m_facts.labels(type(payload).__name__).inc()

            return on_msg

        for base, subject in sources:
            if s.alerts_replay_s > 0:
                # from a sequence, not a time: a time stops the consumer at its first recreation (Bus.first_seq_since)
                seq = await bus.first_seq_since(bus.catalog.stream_name(base), start)
                config: ConsumerConfig | None = ConsumerConfig(opt_start_seq=seq)
                policy = DeliverPolicy.BY_START_SEQUENCE
            else:
                config, policy = None, DeliverPolicy.NEW
            sub = await bus.js.subscribe(
                subject,
                stream=bus.catalog.stream_name(base),
                cb=make_cb(),
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
                pending_msgs_limit=200_000,
            )
            self._subs.append(sub)
        self._tasks.append(asyncio.create_task(self._await_replay(), name="alerts-replay"))

    async def _await_replay(self) -> None:
        """Set `caught_up` once every consumer has delivered its backlog (or after the replay timeout), so
        the first evaluation does not judge from half the history."""
        deadline = asyncio.get_running_loop().time() + self.settings.alerts_replay_timeout_s
        try:
            while asyncio.get_running_loop().time() < deadline:
                done = True
                for sub in self._subs:
                    info = await sub.consumer_info()
                    if info.num_pending or sub.pending_msgs:
                        done = False
                if done:
                    break
                await asyncio.sleep(0.1)
        except Exception as err:
            log.warning("could not follow the replay: %s", err)
        finally:
            self.caught_up.set()

    # ---- leadership and evaluation ----------------------------------------------------------------
    async def _lease_loop(self) -> None:
        assert self.lease is not None and self.rt is not None
        interval = self.settings.alerts_lease_ttl_s / 3
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self.lease.step(), timeout=interval * 2)
            except Exception as err:
                log.warning("lease round failed: %s", err)
            self.m_leader.set(1 if self.lease.is_leader else 0)
            self.rt.checks.info["leader"] = self.lease.is_leader
            self.rt.checks.info["leader_instance"] = self.lease.holder_seen
            await asyncio.sleep(interval)

    async def _eval_loop(self) -> None:
        await self.caught_up.wait()
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self.evaluate_once(), timeout=max(30.0, self.settings.alerts_eval_interval_s))
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(self.settings.alerts_eval_interval_s)

    async def evaluate_once(self) -> list[Action]:
        """One evaluation round (only acts when this copy holds the lease). Returns the applied actions."""
        assert self.rt is not None and self.rt.pool is not None and self.engine is not None
        assert self.lease is not None and self.dispatcher is not None
        pool = self.rt.pool
        async with self._eval_lock:
            rows = await store.firing(pool)
            if not self.lease.is_leader:
                self._set_firing_gauge(rows)
                return []
            now = self.clock()
            firing = [
                FiringAlert(
                    id=r.id,
                    rule=r.rule,
                    subject=r.subject,
                    started_at=r.started_at,
                    last_notified_at=r.last_notified_at,
                    acknowledged=r.acknowledged_at is not None,
                    labels=r.labels,
                )
                for r in rows
            ]
            actions = self.engine.tick(now, firing)
            applied: list[Action] = []
            for action in actions:
                if not self.lease.is_leader:  # lost the lease mid-round: stop acting
                    break
                if await self._apply(action, now):
                    applied.append(action)
            self.evaluations += 1
            if applied:
                self.dispatcher.kick()
                rows = await store.firing(pool)
            self._set_firing_gauge(rows)
            return applied

    async def _apply(self, action: Action, now: datetime) -> bool:
        assert self.rt is not None and self.rt.pool is not None
        pool = self.rt.pool
        e, rule = action.evaluation, action.rule
        row: AlertRow | None = None
        if action.kind == "fire":
            assert e is not None
            row = await store.insert_firing(
                pool,
                alert_id=uuid.uuid4().hex,
                rule=rule.name,
                subject=e.subject,
                severity=rule.severity,
                message=e.message,
                value=e.value,
                threshold=e.threshold,
                labels={"kind": rule.kind, **e.labels},
                now=now,
                fired_by=self.rt.instance,
                notifications=notifications_for(self.channels, "firing"),
            )
        elif action.kind == "resolve":
            assert action.alert is not None
            row = await store.resolve(
                pool,
                action.alert.id,
                now=now,
                message=e.message if e else "resolved",
                value=e.value if e else None,
                notifications=notifications_for(self.channels, "resolved"),
            )
        elif action.kind == "remind":
            assert action.alert is not None
            row = await store.remind(
                pool,
                action.alert.id,
                expected_last=action.alert.last_notified_at,
                now=now,
                message=e.message if e else None,
                value=e.value if e else None,
                notifications=notifications_for(self.channels, "reminder", suffix=f"@{now.isoformat()}"),
            )
        if row is None:
            return False
        self.m_transitions.labels(row.rule, action.kind).inc()
        log.info(
            "alert %s %s (%s): %s",
            row.rule,
            action.kind,
            row.subject,
            row.message,
            extra={"alert_id": row.id, "alert_rule": row.rule, "alert_subject": row.subject},
        )
        return True

    # ---- queries ----------------------------------------------------------------------------------
    async def _query(self, req: AlertQuery, _: RequestContext) -> AlertList:
        assert self.rt is not None and self.rt.pool is not None
        pool = self.rt.pool
        if req.kind == "one":
            if not req.alert_id:
                raise PlatformError(ErrorCode.VALIDATION_ERROR, "alert_id is required for kind 'one'")
            row = await store.get(pool, req.alert_id)
            if row is None:
                raise PlatformError(ErrorCode.NOT_FOUND, f"alert {req.alert_id} not found")
            return AlertList(alerts=[row.event()])
        state = "firing" if req.kind == "active" else req.state
        rows = await store.history(pool, rule=req.rule, severity=req.severity, state=state, limit=req.limit)
        return AlertList(alerts=[r.event() for r in rows])

    async def _ack(self, req: AckAlert, _: RequestContext) -> AlertEvent:
        assert self.rt is not None and self.rt.pool is not None and self.dispatcher is not None
        row, changed = await store.acknowledge(
            self.rt.pool,
            req.alert_id,
            by=req.by,
            now=self.clock(),
            notifications=notifications_for(self.channels, "acknowledged"),
        )
        if row is None:
            raise PlatformError(ErrorCode.NOT_FOUND, f"alert {req.alert_id} not found")
        if changed:
            self.m_transitions.labels(row.rule, "acknowledge").inc()
            self.dispatcher.kick()
        return row.event()
