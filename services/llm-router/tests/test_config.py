"""Provider and route configuration built from settings and keys."""

from __future__ import annotations

import pytest

from adp_router.config import RouteEntry, build_config


def test_simulated_only_when_no_key() -> None:
    cfg = build_config(env={})
    assert cfg.simulated_only
    assert cfg.resolve("analyzer") == [RouteEntry("simulated", "simulated/analyzer")]
    assert cfg.resolve("anything", "Moderator") == [RouteEntry("simulated", "simulated/moderator")]
    assert cfg.resolve("gpt-4o") == [RouteEntry("simulated", "simulated/default")]


def test_default_cast_with_keys() -> None:
    cfg = build_config(env={"GROQ_API_KEY": "g", "ADP_MISTRAL_API_KEY": "m", "OPENROUTER_API_KEY": "o"})
    assert not cfg.simulated_only
    assert [str(e) for e in cfg.resolve("solver")] == [
        "groq/llama-3.3-70b-versatile",
        "openrouter/meta-llama/llama-3.3-70b-instruct",
    ]
    assert [e.provider for e in cfg.resolve("x", persona="Analyzer")] == ["mistral", "openrouter"]
    # explicit provider/model, model name lookup, unknown -> default chain
    assert cfg.resolve("groq/llama-3.1-8b-instant") == [RouteEntry("groq", "llama-3.1-8b-instant")]
    assert cfg.resolve("openrouter/meta-llama/llama-3.3-70b-instruct") == [
        RouteEntry("openrouter", "meta-llama/llama-3.3-70b-instruct")
    ]
    assert cfg.resolve("mistral-small-latest") == [RouteEntry("mistral", "mistral-small-latest")]
    assert [e.provider for e in cfg.resolve("nope")] == ["groq", "mistral", "openrouter"]
    # simulated is still reachable explicitly but never in a chain
    assert cfg.resolve("simulated/solver") == [RouteEntry("simulated", "simulated/solver")]


def test_only_some_keys_drop_missing_providers() -> None:
    cfg = build_config(env={"MISTRAL_API_KEY": "m"})
    assert [e.provider for e in cfg.resolve("solver")] == ["mistral"]  # empty chain -> default chain


def test_custom_providers_and_routes() -> None:
    cfg = build_config(
        providers_json={"local": {"kind": "openai", "base_url": "http://x/v1", "requires_key": False, "models": ["m"]}},
        routes_json={"Analyzer": ["local/m"]},
        env={},
    )
    assert cfg.resolve("analyzer") == [RouteEntry("local", "m")]
    with pytest.raises(ValueError):
        build_config(routes_json={"a": ["ghost/m"]}, env={})
