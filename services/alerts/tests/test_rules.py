"""Rules: the defaults, a rules file and environment overrides, and what is rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adp_alerts.rules import default_rules, load_rules


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


def test_unparseable_rules_raise_value_error(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text("rules: [unclosed")
    with pytest.raises(ValueError, match="YAML"):
        load_rules(str(f))
    with pytest.raises(ValueError):
        load_rules(None, '{"rules": 5}')
