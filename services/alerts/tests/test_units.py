"""Pure helpers: rules loading, lease decisions, webhook signatures, settings parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adp_alerts.lease import LeaseValue, decide
from adp_alerts.notify import render_body, sign, verify
from adp_alerts.rules import default_rules, load_rules
from adp_alerts.settings import AlertsSettings
from adp_common.envelope import utcnow
from adp_common.schemas.alerts import AlertEvent


def test_defaults_match_runbook() -> None:
    rules = {r.name: r for r in default_rules()}
    assert rules["error_rate"].threshold == 0.05 and rules["error_rate"].window_s == 300
    assert rules["error_rate"].min_samples >= 10
    assert rules["latency_p95"].threshold == 2000
    assert rules["provider_unavailable"].threshold == 0.95
    assert rules["budget_threshold"].threshold == 0.8
    assert rules["disk_free"].threshold == 0.10
    assert rules["memory_pressure"].threshold == 0.8
    assert rules["heartbeat_missing"].threshold == 60


def test_rules_file_and_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(
        "rules:\n"
        "  - name: error_rate\n    threshold: 0.1\n    severity: warning\n"
        "  - name: latency_p95\n    enabled: false\n"
        "  - name: error_rate_severe\n    kind: error_rate\n    threshold: 0.3\n    severity: critical\n"
    )
    rules = {r.name: r for r in load_rules(str(f), json.dumps([{"name": "error_rate", "window_s": 60}]))}
    assert rules["error_rate"].threshold == 0.1 and rules["error_rate"].window_s == 60
    assert rules["error_rate"].severity == "warning"
    assert rules["error_rate"].min_samples == 20  # untouched fields keep the default
    assert not rules["latency_p95"].enabled
    assert rules["error_rate_severe"].kind == "error_rate"


def test_bad_rules_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="new_rule"):
        load_rules(None, json.dumps({"rules": [{"name": "new_rule", "threshold": 1}]}))  # no kind
    with pytest.raises(ValueError, match="error_rate"):
        load_rules(None, json.dumps([{"name": "error_rate", "severity": "loud"}]))


def test_lease_decisions() -> None:
    assert decide(None, "a", 100) == "create"
    assert decide(LeaseValue("a", 90), "a", 100) == "renew"
    assert decide(LeaseValue("b", 110), "a", 100) == "follow"
    assert decide(LeaseValue("b", 100), "a", 100) == "takeover"
    assert LeaseValue.decode(LeaseValue("a", 1.5).encode()) == LeaseValue("a", 1.5)
    assert LeaseValue.decode(b"junk") is None


def test_signature_round_trip() -> None:
    ev = AlertEvent(id="x", rule="r", subject="s", severity="info", state="firing", message="m", started_at=utcnow())
    body = render_body("firing", ev, "x:firing:webhook:u").encode()
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, None)


def test_settings_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADP_ALERTS_WEBHOOK_URLS", "http://a/hook, http://b/hook")
    monkeypatch.setenv("ADP_ALERTS_EXPECTED_SERVICES", '["gateway", "cost"]')
    monkeypatch.setenv("ADP_ALERTS_WEBHOOK_SECRET", "zz-very-secret-zz")
    s = AlertsSettings()
    assert s.alerts_webhook_urls == ["http://a/hook", "http://b/hook"]
    assert s.alerts_expected_services == ["gateway", "cost"]
    assert s.alerts_webhook_secret is not None and "very-secret" not in repr(s)


def test_unparseable_rules_raise_value_error(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("rules: [unclosed")
    with pytest.raises(ValueError, match="YAML"):
        load_rules(str(f))
    with pytest.raises(ValueError):
        load_rules(None, '{"rules": 5}')
