"""Pricing: exact money, lookups, configuration (pure, no I/O beyond a temp file)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from adp_cost.pricing import (
    Price,
    PriceConfigError,
    cost_nusd,
    load_price_table,
    nusd_to_usd,
    usd_to_nusd,
)


def test_default_prices_exact() -> None:
    t = load_price_table(environ={})
    # Groq 0.27 / 0.27 per 1M: 15 in + 7 out tokens = 22 * 0.27 µUSD = 5.94 µUSD = 5940 nUSD, no rounding
    p = t.price("groq", "llama-3.3-70b-versatile", 15, 7)
    assert p.cost_nusd == 5940 and p.source == "provider_default"
    assert nusd_to_usd(p.cost_nusd) == Decimal("0.000005940")
    # Mistral 2.50 / 7.50: 1M in + 1M out = 10 USD exactly
    assert t.price("mistral", "mistral-large-latest", 1_000_000, 1_000_000).cost_nusd == 10 * 10**9
    # OpenRouter 1.00 / 3.00
    assert t.price("openrouter", "x/y", 1000, 1000).cost_nusd == usd_to_nusd(Decimal("0.004"))
    # simulated costs nothing
    assert t.price("simulated", "sim-1", 10_000, 10_000).cost_nusd == 0
    # OpenAI / Anthropic known models priced per model
    mini = t.price("openai", "gpt-4o-mini", 1_000_000, 0)
    assert mini.source == "model" and mini.cost_nusd == usd_to_nusd(Decimal("0.15"))
    assert t.price("anthropic", "claude-3-5-haiku-latest", 0, 1_000_000).cost_nusd == 4 * 10**9


def test_sum_of_many_small_costs_is_exact() -> None:
    price = Price(Decimal("0.27"), Decimal("0.27"))
    total = sum(cost_nusd(1, 0, price) for _ in range(1_000_000))
    assert total == cost_nusd(1_000_000, 0, price) == 270_000_000  # 0.27 USD, not 0.2699999...


def test_unknown_model_and_provider_are_flagged() -> None:
    t = load_price_table(environ={})
    p = t.price("openai", "gpt-99", 1_000_000, 0)
    assert p.source == "provider_default" and p.input_price == Decimal("2.50")
    u = t.price("nobody", "m", 1000, 1000)
    assert u.source == "unknown_provider" and u.cost_nusd == 0
    assert t.price("GROQ", "m", 1_000_000, 0).cost_nusd == 270_000_000  # provider names are case-insensitive


def test_sub_nano_prices_round_half_even() -> None:
    price = Price(Decimal("0.0005"), Decimal(0))  # 0.5 nUSD per token
    assert cost_nusd(1, 0, price) == 0  # 0.5 -> 0 (even)
    assert cost_nusd(3, 0, price) == 2  # 1.5 -> 2
    assert cost_nusd(4, 0, price) == 2


def test_config_file_toml_then_json_env_then_simple_env(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(
        """
[providers.groq]
input = "0.10"
output = 0.2
[providers.groq.models."llama-big"]
input = "0.59"
output = "0.79"
[providers.ollama-lan]
input = 0
output = 0
[fallback]
input = "5"
output = "5"
"""
    )
    t = load_price_table(
        str(f),
        '{"providers": {"groq": {"models": {"llama-big": {"output": "0.80"}}}}}',
        environ={"ADP_COST_PRICE_MISTRAL": "1.5,4.5"},
    )
    assert t.lookup("groq", "other") == (Price(Decimal("0.10"), Decimal("0.2")), "provider_default")
    assert t.lookup("groq", "llama-big") == (Price(Decimal("0.59"), Decimal("0.80")), "model")
    assert t.lookup("mistral", "m")[0] == Price(Decimal("1.5"), Decimal("4.5"))
    assert t.lookup("ollama-lan", "m")[0] == Price(Decimal(0), Decimal(0))
    assert t.lookup("zzz", "m") == (Price(Decimal(5), Decimal(5)), "unknown_provider")
    # untouched defaults survive
    assert t.lookup("openrouter", "m")[0] == Price(Decimal("1.00"), Decimal("3.00"))


def test_json_file(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text('{"providers": {"acme": {"input": "1", "output": "2", "models": {"a": {"input": 3, "output": 4}}}}}')
    t = load_price_table(str(f), environ={})
    assert t.price("acme", "a", 1_000_000, 1_000_000).cost_nusd == 7 * 10**9
    assert t.price("acme", "b", 1_000_000, 1_000_000).cost_nusd == 3 * 10**9


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ('{"providers": {"new": {"input": "1"}}}', {}, "needs both"),
        ('{"providers": {"groq": {"input": "-1"}}}', {}, ">= 0"),
        ('{"providers": {"groq": {"input": "abc"}}}', {}, "not a number"),
        ("{not json", {}, "cannot parse"),
        (None, {"ADP_COST_PRICE_GROQ": "1"}, "expected"),
    ],
)
def test_bad_config_is_a_clear_error(text: str | None, env: dict[str, str], match: str) -> None:
    with pytest.raises(PriceConfigError, match=match):
        load_price_table(None, text, environ=env)


def test_missing_file_names_the_variable() -> None:
    with pytest.raises(PriceConfigError, match="ADP_COST_PRICES_FILE"):
        load_price_table("/nonexistent/prices.toml", environ={})
