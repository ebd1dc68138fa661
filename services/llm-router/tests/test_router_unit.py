"""Pure logic of the router: breaker state machine, routing chains, SSE parsing, simulated text."""

from __future__ import annotations

import json

import pytest

from adp_common.schemas.cost import BudgetState
from adp_common.schemas.llm import BreakerState, ChatMessage, CompletionRequest
from adp_common.sse import SSEParser, split_events
from adp_router.breaker import BreakerPolicy, admit, on_failure, on_success
from adp_router.budget import is_exceeded
from adp_router.config import RouteEntry, build_config
from adp_router.health import ProviderHealth
from adp_router.providers.anthropic import to_anthropic
from adp_router.providers.base import parse_retry_after
from adp_router.router import chunk_interval_s
from adp_router.simulated_text import generate, tokens_of, word_count

P = BreakerPolicy(failure_threshold=5, window_s=60, cooldown_s=30, success_threshold=2)


def test_breaker_opens_on_fifth_failure_within_window() -> None:
    st = BreakerState(provider="p")
    for i in range(4):
        st = on_failure(st, 100.0 + i, P)
        assert st.state == "closed"
    st = on_failure(st, 104.0, P)
    assert st.state == "open" and st.opened_at == 104.0
    assert admit(st, 120.0, P) == (False, None)


def test_breaker_old_failures_fall_out_of_window() -> None:
    st = BreakerState(provider="p")
    for t in (0.0, 1.0, 2.0, 3.0):
        st = on_failure(st, t, P)
    st = on_failure(st, 70.0, P)  # the first four are older than 60 s
    assert st.state == "closed"
    assert len(st.failures) == 1


def test_breaker_half_open_after_cooldown_then_closes_after_two_successes() -> None:
    st = BreakerState(provider="p", state="open", opened_at=100.0, failures=[100.0] * 5)
    ok, new = admit(st, 129.9, P)
    assert not ok and new is None
    ok, new = admit(st, 130.0, P)
    assert ok and new is not None and new.state == "half_open"
    one = on_success(new, 131.0, P)
    assert one is not None and one.state == "half_open" and one.successes_in_half_open == 1
    two = on_success(one, 132.0, P)
    assert two is not None and two.state == "closed" and two.failures == []


def test_breaker_half_open_failure_reopens() -> None:
    st = BreakerState(provider="p", state="half_open", opened_at=100.0, successes_in_half_open=1)
    again = on_failure(st, 140.0, P)
    assert again.state == "open" and again.opened_at == 140.0


def test_success_when_closed_writes_nothing() -> None:
    assert on_success(BreakerState(provider="p", failures=[1.0]), 2.0, P) is None


def test_sse_parser_events_comments_multiline() -> None:
    p = SSEParser()
    lines = [": keep-alive", "event: message_start", 'data: {"a":', "data: 1}", "", "data: [DONE]", ""]
    events = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert [(e.event, e.data) for e in events] == [("message_start", '{"a":\n1}'), ("message", "[DONE]")]
    assert p.feed("") is None
    p.feed("data:x")
    tail = p.flush()
    assert tail is not None and tail.data == "x"


def _line_parsed(body: str) -> list[tuple[str, str]]:
    p = SSEParser()
    events = [p.feed(line) for line in body.replace("\r\n", "\n").split("\n")]
    return [(e.event, e.data) for e in events if e is not None]


def test_split_events_agrees_with_the_line_parser_whatever_the_reads() -> None:
    body = (
        'data: {"choices":[{"delta":{"content":"h\u00e9 "}}]}\n\n'
        ": keep-alive\n\n"
        'event: content_block_delta\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        "data: caf\u00e9 \u2014 ok\n\n\n"
        "data:tight\n\n"
        "data: [DONE]\n\n"
        "data: unfinished"
    )
    raw = body.encode()
    expected = _line_parsed(body)
    assert ("content_block_delta", '{"a":\n1}') in expected and expected[-1] == ("message", "[DONE]")
    for size in (1, 2, 3, 5, 7, 16, 64, len(raw)):  # every way the network could cut it, UTF-8 included
        got: list[tuple[str, str]] = []
        rest = b""
        for i in range(0, len(raw), size):
            events, rest = split_events(rest + raw[i : i + size])
            got += [(e.event, e.data) for e in events]
        assert got == expected, size
        assert rest == b"data: unfinished"


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


def _req(
    task: str | None, persona: str | None = None, rnd: int | None = None, topic: str = "Pick a database"
) -> CompletionRequest:
    return CompletionRequest(
        messages=[ChatMessage(role="system", content="be nice"), ChatMessage(role="user", content=f"Topic: {topic}")],
        task=task,
        persona=persona,
        round=rnd,
    )


@pytest.mark.parametrize("persona", ["Analyzer", "Solver", "Moderator"])
@pytest.mark.parametrize("rnd", [1, 3, 5, 7])
def test_simulated_turns(persona: str, rnd: int) -> None:
    text = generate(_req("turn", persona, rnd))
    assert text == generate(_req("turn", persona, rnd))  # deterministic
    assert 60 <= word_count(text) <= 150, text
    assert text.rstrip().endswith((".", "?"))
    others = {"Analyzer", "Solver", "Moderator"} - {persona}
    assert any(o in text for o in others)
    if rnd >= 5:
        assert "agree" in text.lower() and "consensus" in text.lower()
    if persona == "Moderator" and rnd >= 5:
        assert "\nSolution:" in text or " Solution: " in text
    if persona == "Solver" and rnd < 5:
        assert "1." in text and "2." in text
    assert "".join(tokens_of(text)) == text


def test_simulated_other_tasks() -> None:
    q = json.loads(generate(_req("questions")))
    assert len(q["questions"]) == 3
    assert all(2 <= len(x["options"]) <= 4 and x["text"] for x in q["questions"])
    assert 500 <= len(generate(_req("final"))) <= 1000
    assert "Summary" in generate(_req("summary"))
    assert generate(_req("continue")).strip()
    assert generate(_req(None)) != generate(_req(None, topic="Something else"))


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None


def test_health_percentiles() -> None:
    h = ProviderHealth(window_s=10)
    for i in range(1, 101):
        h.record(1000.0, True, float(i))
    h.record(1000.0, False, 5000.0)
    snap = h.snapshot(1005.0)
    assert snap.requests == 101 and snap.latency_p50_ms == 50 and snap.latency_p95_ms == 95
    assert snap.success_rate == pytest.approx(100 / 101, abs=1e-4)
    assert h.snapshot(2000.0).requests == 0


def test_budget_state_staleness() -> None:
    st = BudgetState(scope="global", day="2020-01-01", spent_usd=2, limit_usd=1, percentage=2.0, exceeded=True)
    assert not is_exceeded(st, "2020-01-02")
    assert is_exceeded(st, "2020-01-01")


def test_anthropic_message_shaping() -> None:
    req = CompletionRequest(
        messages=[
            ChatMessage(role="system", content="s"),
            ChatMessage(role="assistant", content="a"),
            ChatMessage(role="user", content="u1"),
            ChatMessage(role="user", content="u2"),
        ]
    )
    system, msgs = to_anthropic(req)
    assert system == "s"
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[2]["content"] == "u1\n\nu2"


def test_chunk_interval_grows_with_load_up_to_the_cap() -> None:
    assert chunk_interval_s(1, 20, 100, 50) == pytest.approx(0.020)
    assert chunk_interval_s(50, 20, 100, 50) == pytest.approx(0.020)
    assert chunk_interval_s(100, 20, 100, 50) == pytest.approx(0.040)
    assert chunk_interval_s(250, 20, 100, 50) == pytest.approx(0.100)
    assert chunk_interval_s(5000, 20, 100, 50) == pytest.approx(0.100)
    assert chunk_interval_s(500, 20, 0, 50) == pytest.approx(0.020)  # no growth configured
    assert chunk_interval_s(500, 0, 0, 50) == 0.0  # every token its own chunk


def test_chunk_interval_grows_with_the_event_loop_lag_when_cpu_runs_short() -> None:
    # (streams, base, max, busy streams, lag ms, overload lag ms, overload max ms)
    assert chunk_interval_s(500, 20, 500, 20, 4.0, 5.0, 1000) == pytest.approx(0.500)  # lag below the mark
    assert chunk_interval_s(500, 20, 500, 20, 7.5, 5.0, 1000) == pytest.approx(0.750)  # in proportion
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 5.0, 1000) == pytest.approx(1.000)  # capped
    assert chunk_interval_s(1, 20, 500, 20, 10.0, 5.0, 1000) == pytest.approx(0.040)  # few streams, busy machine
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 0.0, 1000) == pytest.approx(0.500)  # off
    assert chunk_interval_s(500, 20, 500, 20, 50.0, 5.0, 300) == pytest.approx(0.500)  # never below the load's
    assert chunk_interval_s(500, 0, 0, 20, 50.0, 5.0, 1000) == 0.0  # every token its own chunk stays so
