"""Alert rule definitions: the runbook's defaults, and loading overrides from a YAML/JSON file and env.

A rule is an instance of one of the built-in *kinds* (what is measured) with its own threshold, window,
minimum sample, severity and re-notification interval. Several rules may share a kind (e.g. a warning
rule at 5 % errors and a critical one at 25 %). See docs/alerts.md for the file format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from adp_common.schemas.alerts import Severity

RuleKind = Literal[
    "error_rate",
    "latency_p95",
    "provider_unavailable",
    "budget_threshold",
    "budget_exceeded",
    "disk_free",
    "memory_pressure",
    "heartbeat_missing",
]


class Rule(BaseModel):
    """One alert rule. `threshold` meaning depends on the kind (see docs/alerts.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: RuleKind
    enabled: bool = True
    severity: Severity = "warning"
    threshold: float = 0.0
    window_s: float = Field(default=300.0, gt=0, description="sliding window for windowed kinds")
    min_samples: int = Field(default=0, ge=0, description="minimum requests in the window before it can fire")
    for_s: float = Field(default=0.0, ge=0, description="condition must hold this long before firing")
    remind_every_s: float = Field(default=3600.0, ge=0, description="re-notify while firing; 0 = never")
    description: str = ""


def default_rules() -> list[Rule]:
    """The runbook's alerts."""
    return [
        Rule(
            name="error_rate",
            kind="error_rate",
            severity="critical",
            threshold=0.05,
            window_s=300,
            min_samples=20,
            description="gateway 5xx rate over the sliding window",
        ),
        Rule(
            name="latency_p95",
            kind="latency_p95",
            severity="warning",
            threshold=2000.0,
            window_s=300,
            min_samples=20,
            description="gateway p95 latency (ms) over the sliding window",
        ),
        Rule(
            name="provider_unavailable",
            kind="provider_unavailable",
            severity="critical",
            threshold=0.95,
            window_s=300,
            min_samples=10,
            description="LLM provider breaker open, reported unavailable, or success rate under threshold",
        ),
        Rule(
            name="budget_threshold",
            kind="budget_threshold",
            severity="warning",
            threshold=0.8,
            description="daily cost reached the budget's alert threshold (80 %)",
        ),
        Rule(
            name="budget_exceeded",
            kind="budget_exceeded",
            severity="critical",
            threshold=1.0,
            description="daily cost over budget",
        ),
        Rule(
            name="disk_free",
            kind="disk_free",
            severity="critical",
            threshold=0.10,
            description="free disk ratio under threshold",
        ),
        Rule(
            name="memory_pressure",
            kind="memory_pressure",
            severity="warning",
            threshold=0.8,
            description="host memory pressure over threshold",
        ),
        Rule(
            name="heartbeat_missing",
            kind="heartbeat_missing",
            severity="critical",
            threshold=60.0,
            description="no heartbeat from any copy of a service for threshold seconds",
        ),
    ]


class RulesFile(BaseModel):
    rules: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _accept_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"rules": data}
        if data is None:
            return {"rules": []}
        return data


def merge_rules(base: list[Rule], overrides: list[dict[str, Any]]) -> list[Rule]:
    """Apply overrides by rule name: an existing name is updated field by field, a new name is added
    (then `kind` is required). Validation errors raise ValueError naming the rule."""
    by_name: dict[str, Rule] = {r.name: r for r in base}
    order = [r.name for r in base]
    for raw in overrides:
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"every rule needs a 'name': {raw!r}")
        name = str(raw["name"])
        try:
            if name in by_name:
                by_name[name] = Rule.model_validate({**by_name[name].model_dump(), **raw})
            else:
                by_name[name] = Rule.model_validate(raw)
                order.append(name)
        except Exception as err:
            raise ValueError(f"invalid rule {name!r}: {err}") from None
    return [by_name[n] for n in order]


def parse_rules_text(text: str) -> list[dict[str, Any]]:
    """YAML (a superset of JSON): either a list of rules or a mapping with a `rules` list."""
    try:
        data = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"rules file is not valid YAML/JSON: {err}") from None
    try:
        return RulesFile.model_validate(data).rules
    except ValidationError as err:
        raise ValueError(f"rules file: {err}") from None


def load_rules(file: str | None = None, env_json: str | None = None) -> list[Rule]:
    """Defaults, then the rules file (ADP_ALERTS_RULES_FILE), then inline overrides (ADP_ALERTS_RULES)."""
    rules = default_rules()
    if file:
        rules = merge_rules(rules, parse_rules_text(Path(file).read_text()))
    if env_json:
        rules = merge_rules(rules, parse_rules_text(env_json))
    return rules
