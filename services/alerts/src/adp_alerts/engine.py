"""The rule engine: pure logic, no I/O. The shell feeds it facts (`observe_*`) and ticks it with a clock.

- `Observations` (adp_alerts.observations) keeps what the facts say.
- `evaluate_rule` (adp_alerts.evaluators, one evaluator per rule kind) turns one rule and the
  observations into one `Evaluation` per subject.
- `Engine.tick(now, firing)` compares the evaluations with the alerts currently firing (from the
  database, the source of truth) and returns the lifecycle actions: fire, resolve, remind. An alert is
  keyed by (rule, subject), so a long outage is one alert; reminders are throttled per rule.

Times are timezone-aware datetimes taken from the facts themselves (so a replay of the stream after a
restart rebuilds the same state) and from the injected clock for "now".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from adp_alerts.evaluators import Evaluation, Key, evaluate_rule
from adp_alerts.observations import Observations, percentile
from adp_alerts.rules import Rule

__all__ = ["Action", "Engine", "Evaluation", "FiringAlert", "Observations", "evaluate_rule", "percentile"]


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
