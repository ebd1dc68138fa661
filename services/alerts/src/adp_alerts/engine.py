"""The rule engine: pure logic, no I/O. The shell feeds it facts (`observe_*`) and ticks it with a clock.

- `Observations` keeps what the facts say: sliding windows of request stats and router call outcomes,
  the latest breaker / provider-health / budget state, and the latest heartbeat of every service copy.
- `evaluate_rule` turns one rule and the observations into one `Evaluation` per subject: active (the
  condition holds), inactive (it does not) or unknown (`active=None`: not enough information to decide,
  so nothing changes).
- `Engine.tick(now, firing)` compares the evaluations with the alerts currently firing (from the
  database, the source of truth) and returns the lifecycle actions: fire, resolve, remind. An alert is
  keyed by (rule, subject), so a long outage is one alert; reminders are throttled per rule.

Times are timezone-aware datetimes taken from the facts themselves (so a replay of the stream after a
restart rebuilds the same state) and from the injected clock for "now".
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from adp_alerts.rules import Rule
from adp_common.schemas.llm import BreakerStateName, UsageRecord
from adp_common.schemas.ops import BreakerChange, BudgetEvent, Heartbeat, ProviderHealthEvent, RequestStats

Key = tuple[str, str]  # (rule name, subject)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _StatsWindow:
    end: datetime
    requests: int
    errors: int
    latencies: list[float]
    p95: float | None


@dataclass
class _Beat:
    time: datetime
    memory_pressure: float
    disk_free_ratio: float


@dataclass
class _Budget:
    day: str
    kind: str
    percentage: float
    spent: str
    limit: str


@dataclass
class _Health:
    time: datetime
    available: bool
    success_rate: float | None
    requests: int


class Observations:
    """What the facts say, bounded in time by `retention` (the longest rule window)."""

    def __init__(
        self, retention: timedelta = timedelta(minutes=5), forget_after: timedelta = timedelta(days=1)
    ) -> None:
        self.retention = retention
        self.forget_after = forget_after
        # service -> (instance, window_start) -> window
        self.stats: dict[str, dict[tuple[str, datetime], _StatsWindow]] = {}
        # provider -> deque of (time, ok)
        self.calls: dict[str, deque[tuple[datetime, bool]]] = {}
        self.breakers: dict[str, tuple[datetime, BreakerStateName]] = {}
        self.health: dict[str, _Health] = {}
        self.budgets: dict[str, _Budget] = {}
        # service -> instance -> latest beat
        self.beats: dict[str, dict[str, _Beat]] = {}

    # ---- feeding --------------------------------------------------------------------------------
    def observe_request_stats(self, ev: RequestStats) -> None:
        start = _aware(ev.window_start)
        self.stats.setdefault(ev.service, {})[(ev.instance, start)] = _StatsWindow(
            end=start + timedelta(seconds=ev.window_s),
            requests=ev.requests,
            errors=ev.errors,
            latencies=list(ev.latencies_ms),
            p95=ev.latency_p95_ms,
        )

    def observe_usage(self, ev: UsageRecord) -> None:
        self.calls.setdefault(ev.provider, deque()).append((_aware(ev.time), ev.status == "ok"))

    def observe_breaker(self, ev: BreakerChange) -> None:
        t = _aware(ev.time)
        cur = self.breakers.get(ev.provider)
        if cur is None or t >= cur[0]:
            self.breakers[ev.provider] = (t, ev.state)

    def observe_provider_health(self, ev: ProviderHealthEvent) -> None:
        t = _aware(ev.time)
        cur = self.health.get(ev.provider)
        if cur is None or t >= cur.time:
            self.health[ev.provider] = _Health(t, ev.available, ev.success_rate, ev.requests)

    def observe_budget(self, ev: BudgetEvent) -> None:
        cur = self.budgets.get(ev.scope)
        if cur is not None and cur.day > ev.day:
            return  # an older day's event arriving late
        self.budgets[ev.scope] = _Budget(ev.day, ev.kind, ev.percentage, ev.spent_usd, ev.limit_usd)

    def observe_heartbeat(self, ev: Heartbeat) -> None:
        t = _aware(ev.time)
        per = self.beats.setdefault(ev.service, {})
        cur = per.get(ev.instance)
        if cur is None or t >= cur.time:
            per[ev.instance] = _Beat(t, ev.memory_pressure, ev.disk_free_ratio)

    def observe(self, payload: Any) -> bool:
        """Dispatch any known fact; returns False for payloads the engine does not use."""
        if isinstance(payload, RequestStats):
            self.observe_request_stats(payload)
        elif isinstance(payload, UsageRecord):
            self.observe_usage(payload)
        elif isinstance(payload, BreakerChange):
            self.observe_breaker(payload)
        elif isinstance(payload, ProviderHealthEvent):
            self.observe_provider_health(payload)
        elif isinstance(payload, BudgetEvent):
            self.observe_budget(payload)
        elif isinstance(payload, Heartbeat):
            self.observe_heartbeat(payload)
        else:
            return False
        return True

    def prune(self, now: datetime) -> None:
        """Forget windowed data older than the retention (latest-state facts are kept)."""
        horizon = now - self.retention
        for service, windows in self.stats.items():
            self.stats[service] = {k: w for k, w in windows.items() if w.end > horizon}
        for calls in self.calls.values():
            while calls and calls[0][0] <= horizon:
                calls.popleft()
        # copies silent for a day are forgotten (restarts create new instance ids); a firing
        # heartbeat alert for their service stays firing (see evaluate_rule)
        forget = now - self.forget_after
        for service in list(self.beats):
            per = {i: b for i, b in self.beats[service].items() if b.time > forget}
            if per:
                self.beats[service] = per
            else:
                del self.beats[service]

    # ---- queries --------------------------------------------------------------------------------
    def request_window(self, service: str, now: datetime, window: timedelta) -> tuple[int, int, list[float], float]:
        """(requests, errors, pooled latency samples, requests-weighted mean of reported p95s)."""
        horizon = now - window
        requests = errors = 0
        samples: list[float] = []
        p95_weighted = 0.0
        p95_weight = 0
        for w in self.stats.get(service, {}).values():
            if w.end <= horizon or w.end > now + timedelta(seconds=5):
                continue
            requests += w.requests
            errors += w.errors
            samples.extend(w.latencies)
            if w.p95 is not None and w.requests > 0:
                p95_weighted += w.p95 * w.requests
                p95_weight += w.requests
        return requests, errors, samples, (p95_weighted / p95_weight if p95_weight else math.nan)

    def call_window(self, provider: str, now: datetime, window: timedelta) -> tuple[int, int]:
        """(calls, successful calls) of a provider in the window."""
        horizon = now - window
        calls = ok = 0
        for t, success in self.calls.get(provider, ()):
            if t > horizon:
                calls += 1
                ok += success
        return calls, ok


@dataclass
class Evaluation:
    rule: str
    subject: str
    active: bool | None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.rule, self.subject)


@dataclass
class FiringAlert:
    """What the engine needs to know about an alert that is firing (loaded from the database)."""

    id: str
    rule: str
    subject: str
    started_at: datetime
    last_notified_at: datetime
    acknowledged: bool = False
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.rule, self.subject)


def _utc_day(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


def evaluate_rule(
    rule: Rule,
    obs: Observations,
    now: datetime,
    *,
    firing_subjects: set[str],
    firing_labels: dict[str, dict[str, Any]] | None = None,
    expected_services: set[str] | None = None,
    started_at: datetime | None = None,
) -> list[Evaluation]:
    """Evaluate one rule over every subject it knows about (plus the subjects it is firing for)."""
    window = timedelta(seconds=rule.window_s)
    out: list[Evaluation] = []
    firing_labels = firing_labels or {}

    def ev(subject: str, active: bool | None, value: float | None, message: str, **labels: Any) -> None:
        out.append(Evaluation(rule.name, subject, active, value, rule.threshold, message, labels))

    if rule.kind in ("error_rate", "latency_p95"):
        for service in sorted(set(obs.stats) | firing_subjects):
            requests, errors, samples, mean_p95 = obs.request_window(service, now, window)
            if requests < max(rule.min_samples, 1):
                # Too few requests to judge: never fires, and a firing alert resolves (nothing to show).
                ev(service, False, None, f"{service}: {requests} requests in window (min {rule.min_samples})")
                continue
            if rule.kind == "error_rate":
                rate = errors / requests
                ev(
                    service,
                    rate > rule.threshold,
                    round(rate, 6),
                    f"{service} error rate {rate:.1%} over {rule.window_s:g}s ({errors}/{requests} requests), "
                    f"threshold {rule.threshold:.1%}",
                    requests=requests,
                    errors=errors,
                )
            else:
                p95 = percentile(samples, 0.95) if samples else (None if math.isnan(mean_p95) else mean_p95)
                if p95 is None:
                    ev(service, False, None, f"{service}: no latency figures in window")
                    continue
                ev(
                    service,
                    p95 > rule.threshold,
                    round(p95, 3),
                    f"{service} p95 latency {p95:.0f} ms over {rule.window_s:g}s, threshold {rule.threshold:.0f} ms",
                    requests=requests,
                )
    elif rule.kind == "provider_unavailable":
        providers = set(obs.breakers) | set(obs.health) | set(obs.calls) | firing_subjects
        for provider in sorted(providers):
            reasons: list[str] = []
            known = False
            value: float | None = None
            breaker = obs.breakers.get(provider)
            if breaker is not None:
                known = True
                if breaker[1] != "closed":
                    reasons.append(f"circuit breaker {breaker[1]}")
            health = obs.health.get(provider)
            if health is not None and health.time > now - window:
                known = True
                if not health.available:
                    reasons.append("reported unavailable")
                if health.success_rate is not None and health.requests >= rule.min_samples:
                    value = health.success_rate
                    if health.success_rate < rule.threshold:
                        reasons.append(f"success rate {health.success_rate:.1%} (router)")
            calls, ok = obs.call_window(provider, now, window)
            if calls:
                known = True
                if calls >= max(rule.min_samples, 1):
                    rate = ok / calls
                    value = rate if value is None else min(value, rate)
                    if rate < rule.threshold:
                        reasons.append(f"success rate {rate:.1%} over {calls} calls")
            if not known:
                ev(provider, None, None, f"provider {provider}: no recent information")
            elif reasons:
                ev(provider, True, value, f"provider {provider} unavailable: " + "; ".join(reasons))
            else:
                ev(provider, False, value, f"provider {provider} available")
    elif rule.kind in ("budget_threshold", "budget_exceeded"):
        today = _utc_day(now)
        kinds = ("threshold", "exceeded") if rule.kind == "budget_threshold" else ("exceeded",)
        for scope in sorted(set(obs.budgets) | firing_subjects):
            b = obs.budgets.get(scope)
            if b is None:
                # After a restart the event may be older than the replay: keep the alert until the day ends.
                day = str(firing_labels.get(scope, {}).get("day", ""))
                ev(scope, False if day and day != today else None, None, f"budget {scope}: day {day} is over")
                continue
            if b.day != today:
                ev(scope, False, b.percentage, f"budget {scope}: a new day started", day=b.day)
                continue
            what = "over budget" if b.kind == "exceeded" else "at its alert threshold"
            ev(
                scope,
                b.kind in kinds,
                b.percentage,
                f"budget {scope} {what}: spent ${b.spent} of ${b.limit} ({b.percentage:g} %) on {b.day}"
                if b.kind in kinds
                else f"budget {scope}: {b.kind} on {b.day}",
                day=b.day,
                spent_usd=b.spent,
                limit_usd=b.limit,
            )
    elif rule.kind in ("disk_free", "memory_pressure"):
        seen: set[str] = set()
        for service, per in sorted(obs.beats.items()):
            for instance, beat in sorted(per.items()):
                subject = f"{service}/{instance}"
                seen.add(subject)
                if beat.time <= now - window:
                    ev(subject, False, None, f"{subject}: no recent heartbeat")
                    continue
                if rule.kind == "disk_free":
                    ev(
                        subject,
                        beat.disk_free_ratio < rule.threshold,
                        beat.disk_free_ratio,
                        f"{subject} free disk {beat.disk_free_ratio:.1%}, threshold {rule.threshold:.0%}",
                        service=service,
                        instance=instance,
                    )
                else:
                    ev(
                        subject,
                        beat.memory_pressure > rule.threshold,
                        beat.memory_pressure,
                        f"{subject} memory pressure {beat.memory_pressure:.1%}, threshold {rule.threshold:.0%}",
                        service=service,
                        instance=instance,
                    )
        for subject in sorted(firing_subjects - seen):
            ev(subject, False, None, f"{subject}: copy is gone")
    elif rule.kind == "heartbeat_missing":
        services = set(obs.beats) | (expected_services or set()) | firing_subjects
        for service in sorted(services):
            beats = obs.beats.get(service, {})
            last = max((b.time for b in beats.values()), default=None)
            if last is None:
                since = started_at or now
                age = (now - since).total_seconds()
                if age <= rule.threshold:
                    ev(service, None, None, f"{service}: no heartbeat seen yet")
                    continue
                ev(service, True, age, f"no heartbeat from {service} since this evaluator started ({age:.0f}s)")
                continue
            age = (now - last).total_seconds()
            ev(
                service,
                age > rule.threshold,
                round(age, 3),
                f"no heartbeat from {service} for {age:.0f}s (threshold {rule.threshold:g}s)"
                if age > rule.threshold
                else f"{service} heartbeat {age:.0f}s ago",
                last_seen=last.isoformat(),
                instances=len(beats),
            )
    return out


ActionKind = Literal["fire", "resolve", "remind"]


@dataclass
class Action:
    kind: ActionKind
    rule: Rule
    evaluation: Evaluation | None = None  # fire, remind (when the condition was evaluated), resolve
    alert: FiringAlert | None = None  # resolve, remind

    @property
    def key(self) -> Key:
        if self.alert is not None:
            return self.alert.key
        assert self.evaluation is not None
        return self.evaluation.key


class Engine:
    """Observations + rules + the 'pending' (for_s) timers. `tick` is deterministic given its inputs."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        expected_services: set[str] | None = None,
        started_at: datetime | None = None,
    ) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.rules_by_name = {r.name: r for r in self.rules}
        self.expected_services = set(expected_services or ())
        self.started_at = started_at
        longest = max((r.window_s for r in self.rules), default=300.0)
        self.obs = Observations(timedelta(seconds=longest))
        self.pending: dict[Key, datetime] = {}

    def observe(self, payload: Any) -> bool:
        return self.obs.observe(payload)

    def evaluate(self, now: datetime, firing: list[FiringAlert]) -> list[Evaluation]:
        self.obs.prune(now)
        out: list[Evaluation] = []
        for rule in self.rules:
            mine = [a for a in firing if a.rule == rule.name]
            out.extend(
                evaluate_rule(
                    rule,
                    self.obs,
                    now,
                    firing_subjects={a.subject for a in mine},
                    firing_labels={a.subject: a.labels for a in mine},
                    expected_services=self.expected_services,
                    started_at=self.started_at or now,
                )
            )
        return out

    def tick(self, now: datetime, firing: list[FiringAlert]) -> list[Action]:
        """The lifecycle decisions for this moment (the caller applies them, guarded by the database)."""
        if self.started_at is None:
            self.started_at = now
        evaluations = self.evaluate(now, firing)
        firing_by_key = {a.key: a for a in firing}
        actions: list[Action] = []
        seen: set[Key] = set()
        for e in evaluations:
            rule = self.rules_by_name[e.rule]
            seen.add(e.key)
            alert = firing_by_key.get(e.key)
            if e.active is True:
                if alert is None:
                    since = self.pending.setdefault(e.key, now)
                    if (now - since).total_seconds() >= rule.for_s:
                        actions.append(Action("fire", rule, evaluation=e))
                        self.pending.pop(e.key, None)
                elif self._remind_due(rule, alert, now):
                    actions.append(Action("remind", rule, evaluation=e, alert=alert))
            else:
                if e.active is False:
                    self.pending.pop(e.key, None)
                if alert is not None:
                    if e.active is False:
                        actions.append(Action("resolve", rule, evaluation=e, alert=alert))
                    elif self._remind_due(rule, alert, now):
                        actions.append(Action("remind", rule, evaluation=None, alert=alert))
        for alert in firing:
            if alert.key in seen:
                continue
            if alert.rule not in self.rules_by_name:
                # The rule was removed or disabled: its alerts resolve.
                placeholder = Rule(name=alert.rule, kind="error_rate")
                msg = f"rule {alert.rule} is no longer enabled"
                actions.append(
                    Action(
                        "resolve",
                        placeholder,
                        evaluation=Evaluation(alert.rule, alert.subject, False, message=msg),
                        alert=alert,
                    )
                )
        # forget pending timers of conditions that disappeared
        for key in list(self.pending):
            if key not in seen:
                self.pending.pop(key, None)
        return actions

    @staticmethod
    def _remind_due(rule: Rule, alert: FiringAlert, now: datetime) -> bool:
        if alert.acknowledged or rule.remind_every_s <= 0:
            return False
        return (now - alert.last_notified_at).total_seconds() >= rule.remind_every_s
