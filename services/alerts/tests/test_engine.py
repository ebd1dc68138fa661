"""Pure rule-engine tests: sliding windows, thresholds, min-sample guard, lifecycle, throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adp_alerts.engine import Action, Engine, FiringAlert, percentile
from adp_alerts.rules import Rule, default_rules
from adp_common.schemas.llm import UsageRecord
from adp_common.schemas.ops import BreakerChange, BudgetEvent, Heartbeat, ProviderHealthEvent, RequestStats

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Sim:
    """An engine plus an in-memory stand-in for the alerts table, with a manual clock."""

    def __init__(self, rules: list[Rule] | None = None, **kw: object) -> None:
        self.now = T0
        self.engine = Engine(rules or default_rules(), started_at=T0, **kw)
        self.firing: dict[tuple[str, str], FiringAlert] = {}
        self.log: list[tuple[str, str, str]] = []
        self.n = 0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def tick(self) -> list[Action]:
        actions = self.engine.tick(self.now, list(self.firing.values()))
        for a in actions:
            self.log.append((a.kind, a.key[0], a.key[1]))
            if a.kind == "fire":
                self.n += 1
                assert a.evaluation is not None
                self.firing[a.key] = FiringAlert(
                    str(self.n), a.key[0], a.key[1], self.now, self.now, labels=dict(a.evaluation.labels)
                )
            elif a.kind == "resolve":
                del self.firing[a.key]
            elif a.kind == "remind":
                self.firing[a.key].last_notified_at = self.now
        return actions

    def kinds(self, rule: str) -> list[str]:
        return [k for k, r, _ in self.log if r == rule]

    def stats(self, requests: int, errors: int = 0, latencies: list[float] | None = None, window: float = 5) -> None:
        self.engine.observe(
            RequestStats(
                service="gateway",
                instance="g1",
                window_start=self.now - timedelta(seconds=window),
                window_s=window,
                requests=requests,
                errors=errors,
                latencies_ms=latencies or [],
            )
        )

    def beat(self, service: str = "cost", instance: str = "c1", mem: float = 0.3, disk: float = 0.5) -> None:
        self.engine.observe(
            Heartbeat(service=service, instance=instance, time=self.now, memory_pressure=mem, disk_free_ratio=disk)
        )


def only(rule_name: str, **changes: object) -> list[Rule]:
    return [r.model_copy(update=changes) for r in default_rules() if r.name == rule_name]


def test_percentile() -> None:
    assert percentile([], 0.95) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0


def test_error_rate_fires_over_threshold_and_resolves_when_window_slides() -> None:
    sim = Sim(only("error_rate"))
    sim.stats(100, 2)
    assert sim.tick() == []  # 2 %
    sim.advance(5)
    sim.stats(100, 50)  # 52/200 = 26 %
    assert [a.kind for a in sim.tick()] == ["fire"]
    fired = next(iter(sim.firing.values()))
    assert fired.subject == "gateway"
    # light healthy traffic: the alert holds until the bad windows slide out of the 5-minute window
    for _ in range(80):
        sim.advance(5)
        sim.stats(2, 0)
        sim.tick()
        if not sim.firing:
            break
    assert sim.kinds("error_rate") == ["fire", "resolve"]
    assert timedelta(seconds=300) <= sim.now - T0 <= timedelta(seconds=310)


def test_min_sample_guard() -> None:
    sim = Sim(only("error_rate"))
    sim.stats(2, 1)  # 50 % of two requests: must not page
    assert sim.tick() == []
    sim.advance(5)
    sim.stats(17, 1)  # 2/19 requests, still under the minimum of 20
    assert sim.tick() == []
    sim.advance(5)
    sim.stats(1, 0)  # 2/20 = 10 % with the minimum reached
    assert [a.kind for a in sim.tick()] == ["fire"]


def test_long_outage_is_one_alert_with_throttled_reminders() -> None:
    sim = Sim(only("error_rate", remind_every_s=60))
    for _ in range(100):  # 100 cycles of 2 s = 200 s of outage
        sim.stats(50, 25)
        sim.tick()
        sim.advance(2)
    assert sim.kinds("error_rate").count("fire") == 1
    assert sim.kinds("error_rate").count("remind") == 3  # at 60, 120, 180 s
    assert len(sim.firing) == 1


def test_acknowledged_alert_gets_no_reminders() -> None:
    sim = Sim(only("error_rate", remind_every_s=10))
    sim.stats(50, 25)
    sim.tick()
    next(iter(sim.firing.values())).acknowledged = True
    for _ in range(10):
        sim.advance(5)
        sim.stats(50, 25)
        sim.tick()
    assert sim.kinds("error_rate") == ["fire"]


def test_for_duration_delays_firing() -> None:
    sim = Sim(only("error_rate", for_s=10))
    sim.stats(50, 25)
    assert sim.tick() == []
    sim.advance(5)
    sim.stats(50, 25)
    assert sim.tick() == []
    sim.advance(5)
    sim.stats(50, 25)
    assert [a.kind for a in sim.tick()] == ["fire"]


def test_latency_p95() -> None:
    sim = Sim(only("latency_p95"))
    sim.stats(30, 0, [100.0] * 30)
    assert sim.tick() == []
    sim.advance(5)
    sim.stats(30, 0, [2500.0] * 30)  # half the window is slow: p95 2.5 s
    assert [a.kind for a in sim.tick()] == ["fire"]
    sim.advance(301)
    sim.stats(30, 0, [100.0] * 30)
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_latency_uses_reported_p95_without_samples() -> None:
    sim = Sim(only("latency_p95"))
    sim.engine.observe(
        RequestStats(
            service="gateway",
            instance="g1",
            window_start=T0 - timedelta(seconds=5),
            window_s=5,
            requests=40,
            errors=0,
            latency_p95_ms=3000,
        )
    )
    assert [a.kind for a in sim.tick()] == ["fire"]


def test_provider_breaker_open_and_back() -> None:
    sim = Sim(only("provider_unavailable"))
    sim.engine.observe(BreakerChange(provider="groq", state="open", previous="closed", time=T0))
    assert [a.kind for a in sim.tick()] == ["fire"]
    for _ in range(5):
        sim.advance(2)
        sim.engine.observe(BreakerChange(provider="groq", state="half_open", previous="open", time=sim.now))
        assert sim.tick() == []  # still one alert
    sim.advance(2)
    sim.engine.observe(BreakerChange(provider="groq", state="closed", previous="half_open", time=sim.now))
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_provider_success_rate_from_health_and_usage() -> None:
    sim = Sim(only("provider_unavailable"))
    sim.engine.observe(ProviderHealthEvent(provider="mistral", available=True, success_rate=0.9, requests=50, time=T0))
    assert [(a.kind, a.key[1]) for a in sim.tick()] == [("fire", "mistral")]
    sim.advance(1)
    sim.engine.observe(
        ProviderHealthEvent(provider="mistral", available=True, success_rate=0.99, requests=50, time=sim.now)
    )
    assert [a.kind for a in sim.tick()] == ["resolve"]
    # usage records: 3 failures in 20 calls = 85 %
    for i in range(20):
        sim.engine.observe(
            UsageRecord(
                request_id=str(i), provider="openai", model="m", status="error" if i < 3 else "ok", time=sim.now
            )
        )
    assert [(a.kind, a.key[1]) for a in sim.tick()] == [("fire", "openai")]
    # below the minimum sample, a provider with few calls never fires
    sim.engine.observe(UsageRecord(request_id="x", provider="anthropic", model="m", status="error", time=sim.now))
    assert sim.tick() == []


def test_provider_unknown_keeps_state() -> None:
    sim = Sim(only("provider_unavailable"))
    sim.firing[("provider_unavailable", "groq")] = FiringAlert("1", "provider_unavailable", "groq", T0, T0)
    assert sim.tick() == []  # no information (e.g. just restarted): neither resolve nor re-fire


def test_budget_threshold_exceeded_cleared_and_new_day() -> None:
    rules = [r for r in default_rules() if r.kind.startswith("budget")]
    sim = Sim(rules)
    day = T0.date().isoformat()

    def budget(kind: str, pct: float, d: str = day) -> None:
        sim.engine.observe(BudgetEvent(scope="global", day=d, kind=kind, spent_usd="8", limit_usd="10", percentage=pct))

    budget("threshold", 80)
    assert [a.key[0] for a in sim.tick()] == ["budget_threshold"]
    budget("exceeded", 101)
    assert [a.key[0] for a in sim.tick()] == ["budget_exceeded"]
    budget("cleared", 50)
    assert sorted(a.kind for a in sim.tick()) == ["resolve", "resolve"]
    budget("exceeded", 120)
    assert len(sim.tick()) == 2
    sim.advance(24 * 3600)  # the next UTC day: yesterday's budget alerts resolve
    assert sorted(a.kind for a in sim.tick()) == ["resolve", "resolve"]


def test_budget_alert_survives_restart_until_day_ends() -> None:
    sim = Sim([r for r in default_rules() if r.name == "budget_exceeded"])
    key = ("budget_exceeded", "global")
    sim.firing[key] = FiringAlert("1", *key, T0, T0, labels={"day": T0.date().isoformat()})
    assert sim.tick() == []
    sim.advance(24 * 3600)
    assert [a.kind for a in sim.tick()] == ["resolve"]


@pytest.mark.parametrize(
    ("rule", "bad", "good"), [("disk_free", {"disk": 0.05}, {}), ("memory_pressure", {"mem": 0.9}, {})]
)
def test_resource_rules(rule: str, bad: dict[str, float], good: dict[str, float]) -> None:
    sim = Sim(only(rule))
    sim.beat(**good)
    assert sim.tick() == []
    sim.advance(2)
    sim.beat(**bad)
    actions = sim.tick()
    assert [(a.kind, a.key[1]) for a in actions] == [("fire", "cost/c1")]
    sim.advance(2)
    sim.beat(**good)
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_resource_alert_of_a_gone_copy_resolves() -> None:
    sim = Sim(only("disk_free"))
    sim.beat(disk=0.01)
    assert len(sim.tick()) == 1
    sim.advance(400)  # no heartbeat for longer than the window
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_heartbeat_missing_fires_after_timeout_and_resolves() -> None:
    sim = Sim(only("heartbeat_missing", threshold=30))
    sim.beat("dialogue", "d1")
    sim.beat("dialogue", "d2")
    for _ in range(5):
        sim.advance(10)
        sim.beat("dialogue", "d2")  # one copy alive is enough
        assert sim.tick() == []
    sim.advance(31)
    assert [(a.kind, a.key[1]) for a in sim.tick()] == [("fire", "dialogue")]
    sim.advance(5)
    sim.beat("dialogue", "d3")
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_expected_service_never_seen() -> None:
    sim = Sim(only("heartbeat_missing", threshold=30), expected_services={"cost"})
    assert sim.tick() == []
    sim.advance(31)
    assert [(a.kind, a.key[1]) for a in sim.tick()] == [("fire", "cost")]


def test_heartbeat_alert_kept_after_restart() -> None:
    sim = Sim(only("heartbeat_missing", threshold=30))
    key = ("heartbeat_missing", "cost")
    sim.firing[key] = FiringAlert("1", *key, T0, T0)
    assert sim.tick() == []  # unknown right after start: keep firing, do not resolve
    sim.advance(31)
    assert sim.tick() == []  # still missing: no second alert


def test_disabled_rule_resolves_its_alerts() -> None:
    sim = Sim(only("error_rate", enabled=False))
    key = ("error_rate", "gateway")
    sim.firing[key] = FiringAlert("1", *key, T0, T0)
    assert [a.kind for a in sim.tick()] == ["resolve"]


def test_two_rules_of_one_kind() -> None:
    rules = [
        *only("error_rate"),
        Rule(name="error_rate_severe", kind="error_rate", severity="critical", threshold=0.25, min_samples=20),
    ]
    sim = Sim(rules)
    sim.stats(100, 10)
    assert [a.key[0] for a in sim.tick()] == ["error_rate"]
    sim.stats(100, 90)
    assert [a.key[0] for a in sim.tick()] == ["error_rate_severe"]


def test_silent_copies_are_forgotten_but_their_missing_service_alert_stays() -> None:
    sim = Sim(only("heartbeat_missing", threshold=30))
    sim.beat("dialogue", "d1")
    sim.advance(31)
    assert [a.kind for a in sim.tick()] == ["fire"]
    sim.advance(2 * 24 * 3600)
    assert [a.kind for a in sim.tick()] == ["remind"]  # still the one alert, still firing
    assert "dialogue" not in sim.engine.obs.beats
    assert len(sim.firing) == 1
