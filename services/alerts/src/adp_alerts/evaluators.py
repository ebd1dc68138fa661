"""One evaluator per rule kind (pure logic, no I/O): each turns a rule and the observations into one
`Evaluation` per subject — active (the condition holds), inactive (it does not) or unknown (`active=None`:
not enough information to decide, so nothing changes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adp_alerts.observations import Beat, Observations, percentile
from adp_alerts.rules import Rule, RuleKind

Key = tuple[str, str]  # (rule name, subject)


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
class RuleRun:
    """One evaluation of one rule: what it looks at, and the evaluations it produces."""

    rule: Rule
    obs: Observations
    now: datetime
    firing_subjects: set[str]
    firing_labels: dict[str, dict[str, Any]]
    expected_services: set[str]
    started_at: datetime | None
    out: list[Evaluation] = field(default_factory=list)

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.rule.window_s)

    def ev(self, subject: str, active: bool | None, value: float | None, message: str, **labels: Any) -> None:
        self.out.append(Evaluation(self.rule.name, subject, active, value, self.rule.threshold, message, labels))


RequestJudge = Callable[[RuleRun, str, int, int, list[float], float], None]


def _each_service_window(run: RuleRun, judge: RequestJudge) -> None:
    """Every service's request window, judged when it holds enough requests."""
    rule = run.rule
    for service in sorted(set(run.obs.stats) | run.firing_subjects):
        requests, errors, samples, mean_p95 = run.obs.request_window(service, run.now, run.window)
        if requests < max(rule.min_samples, 1):
            # Too few requests to judge: never fires, and a firing alert resolves (nothing to show).
            run.ev(service, False, None, f"{service}: {requests} requests in window (min {rule.min_samples})")
            continue
        judge(run, service, requests, errors, samples, mean_p95)


def _judge_error_rate(run: RuleRun, service: str, requests: int, errors: int, _: list[float], __: float) -> None:
    rule, rate = run.rule, errors / requests
    run.ev(
        service,
        rate > rule.threshold,
        round(rate, 6),
        f"{service} error rate {rate:.1%} over {rule.window_s:g}s ({errors}/{requests} requests), "
        f"threshold {rule.threshold:.1%}",
        requests=requests,
        errors=errors,
    )


def _judge_latency(run: RuleRun, service: str, requests: int, _: int, samples: list[float], mean_p95: float) -> None:
    rule = run.rule
    p95 = percentile(samples, 0.95) if samples else (None if math.isnan(mean_p95) else mean_p95)
    if p95 is None:
        run.ev(service, False, None, f"{service}: no latency figures in window")
        return
    run.ev(
        service,
        p95 > rule.threshold,
        round(p95, 3),
        f"{service} p95 latency {p95:.0f} ms over {rule.window_s:g}s, threshold {rule.threshold:.0f} ms",
        requests=requests,
    )


def error_rate(run: RuleRun) -> None:
    _each_service_window(run, _judge_error_rate)


def latency_p95(run: RuleRun) -> None:
    _each_service_window(run, _judge_latency)


def provider_unavailable(run: RuleRun) -> None:
    obs = run.obs
    for provider in sorted(set(obs.breakers) | set(obs.health) | set(obs.calls) | run.firing_subjects):
        _judge_provider(run, provider)


def _judge_provider(run: RuleRun, provider: str) -> None:
    """Unavailable when its breaker is not closed, the router reports it so, or its success rate (the
    router's, or over the calls seen in the window) is under the threshold."""
    rule, obs = run.rule, run.obs
    reasons: list[str] = []
    known = False
    value: float | None = None
    breaker = obs.breakers.get(provider)
    if breaker is not None:
        known = True
        if breaker[1] != "closed":
            reasons.append(f"circuit breaker {breaker[1]}")
    health = obs.health.get(provider)
    if health is not None and health.time > run.now - run.window:
        known = True
        if not health.available:
            reasons.append("reported unavailable")
        if health.success_rate is not None and health.requests >= rule.min_samples:
            value = health.success_rate
            if health.success_rate < rule.threshold:
                reasons.append(f"success rate {health.success_rate:.1%} (router)")
    calls, ok = obs.call_window(provider, run.now, run.window)
    if calls:
        known = True
        if calls >= max(rule.min_samples, 1):
            rate = ok / calls
            value = rate if value is None else min(value, rate)
            if rate < rule.threshold:
                reasons.append(f"success rate {rate:.1%} over {calls} calls")
    if not known:
        run.ev(provider, None, None, f"provider {provider}: no recent information")
    elif reasons:
        run.ev(provider, True, value, f"provider {provider} unavailable: " + "; ".join(reasons))
    else:
        run.ev(provider, False, value, f"provider {provider} available")


def budget(run: RuleRun) -> None:
    """budget_threshold fires on a threshold or exceeded event of today, budget_exceeded on exceeded only."""
    today = run.now.astimezone(UTC).date().isoformat()
    kinds = ("threshold", "exceeded") if run.rule.kind == "budget_threshold" else ("exceeded",)
    for scope in sorted(set(run.obs.budgets) | run.firing_subjects):
        b = run.obs.budgets.get(scope)
        if b is None:
            # After a restart the event may be older than the replay: keep the alert until the day ends.
            day = str(run.firing_labels.get(scope, {}).get("day", ""))
            run.ev(scope, False if day and day != today else None, None, f"budget {scope}: day {day} is over")
            continue
        if b.day != today:
            run.ev(scope, False, b.percentage, f"budget {scope}: a new day started", day=b.day)
            continue
        what = "over budget" if b.kind == "exceeded" else "at its alert threshold"
        run.ev(
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


# A copy's gauge from its heartbeat: (active, value, what the message says about it).
GaugeReading = Callable[[Rule, str, Beat], tuple[bool, float, str]]


def _each_copy(run: RuleRun, reading: GaugeReading) -> None:
    """Every service copy's latest heartbeat, judged while recent; a firing copy that is gone resolves."""
    seen: set[str] = set()
    for service, per in sorted(run.obs.beats.items()):
        for instance, beat in sorted(per.items()):
            subject = f"{service}/{instance}"
            seen.add(subject)
            if beat.time <= run.now - run.window:
                run.ev(subject, False, None, f"{subject}: no recent heartbeat")
                continue
            active, value, message = reading(run.rule, subject, beat)
            run.ev(subject, active, value, message, service=service, instance=instance)
    for subject in sorted(run.firing_subjects - seen):
        run.ev(subject, False, None, f"{subject}: copy is gone")


def _disk_free(rule: Rule, subject: str, beat: Beat) -> tuple[bool, float, str]:
    free = beat.disk_free_ratio
    return free < rule.threshold, free, f"{subject} free disk {free:.1%}, threshold {rule.threshold:.0%}"


def _memory_pressure(rule: Rule, subject: str, beat: Beat) -> tuple[bool, float, str]:
    used = beat.memory_pressure
    return used > rule.threshold, used, f"{subject} memory pressure {used:.1%}, threshold {rule.threshold:.0%}"


def disk_free(run: RuleRun) -> None:
    _each_copy(run, _disk_free)


def memory_pressure(run: RuleRun) -> None:
    _each_copy(run, _memory_pressure)


def heartbeat_missing(run: RuleRun) -> None:
    """A service (seen, expected or firing) with no heartbeat for longer than the threshold in seconds;
    one never seen counts from when this evaluator started."""
    rule, now = run.rule, run.now
    for service in sorted(set(run.obs.beats) | run.expected_services | run.firing_subjects):
        beats = run.obs.beats.get(service, {})
        last = max((b.time for b in beats.values()), default=None)
        if last is None:
            age = (now - (run.started_at or now)).total_seconds()
            if age <= rule.threshold:
                run.ev(service, None, None, f"{service}: no heartbeat seen yet")
            else:
                run.ev(service, True, age, f"no heartbeat from {service} since this evaluator started ({age:.0f}s)")
            continue
        age = (now - last).total_seconds()
        run.ev(
            service,
            age > rule.threshold,
            round(age, 3),
            f"no heartbeat from {service} for {age:.0f}s (threshold {rule.threshold:g}s)"
            if age > rule.threshold
            else f"{service} heartbeat {age:.0f}s ago",
            last_seen=last.isoformat(),
            instances=len(beats),
        )


EVALUATORS: dict[RuleKind, Callable[[RuleRun], None]] = {
    "error_rate": error_rate,
    "latency_p95": latency_p95,
    "provider_unavailable": provider_unavailable,
    "budget_threshold": budget,
    "budget_exceeded": budget,
    "disk_free": disk_free,
    "memory_pressure": memory_pressure,
    "heartbeat_missing": heartbeat_missing,
}


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
    run = RuleRun(rule, obs, now, firing_subjects, firing_labels or {}, expected_services or set(), started_at)
    EVALUATORS[rule.kind](run)
    return run.out
