"""Unit tests of the pure domain logic (no I/O)."""

from __future__ import annotations

import json

import pytest

from adp_common.schemas.dialogue import PersonaSpec
from adp_dialogue.domain import export, flow, personas, policy, prompts, questions, resolution
from adp_dialogue.domain.prompts import Msg

NAMES = ["Analyzer", "Solver", "Moderator"]


# ---- turn numbering ---------------------------------------------------------------------------------
def test_turn_numbering_default_cast() -> None:
    assert [personas.turn_number(1, p, 3) for p in (1, 2, 3)] == [1, 2, 3]
    assert [personas.turn_number(4, p, 3) for p in (1, 2, 3)] == [10, 11, 12]
    assert personas.turn_number(2, 1, 4) == 5
    for turn in range(1, 40):
        r, p = personas.position_of_turn(turn, 3)
        assert personas.turn_number(r, p, 3) == turn
    with pytest.raises(ValueError):
        personas.turn_number(1, 4, 3)
    with pytest.raises(ValueError):
        personas.turn_number(0, 1, 3)


def test_personas_default_and_custom() -> None:
    cast = personas.normalise_personas(None)
    assert [p.name for p in cast] == NAMES
    assert [p.route for p in cast] == ["analyzer", "solver", "moderator"]
    assert "assumptions" in cast[0].role_prompt and "implementable" in cast[1].role_prompt
    custom = personas.normalise_personas([PersonaSpec(name="Critic"), PersonaSpec(name="Builder", route="fast")])
    assert [(p.name, p.route) for p in custom] == [("Critic", "critic"), ("Builder", "fast")]
    with pytest.raises(ValueError):
        personas.normalise_personas([PersonaSpec(name="A"), PersonaSpec(name="a")])
    with pytest.raises(ValueError):
        personas.normalise_personas([PersonaSpec(name="User")])


def test_a_default_persona_named_alone_keeps_its_prompt_and_route() -> None:
    """What the console sends when a default persona is unticked: names only."""
    cast = personas.normalise_personas([PersonaSpec(name="Analyzer"), PersonaSpec(name="moderator")])
    assert [p.route for p in cast] == ["analyzer", "moderator"]
    assert cast[0].role_prompt == personas.ANALYZER_PROMPT
    assert "Solution:" in cast[1].role_prompt
    own = personas.normalise_personas([PersonaSpec(name="Solver", role_prompt="Be brief.", route="fast")])
    assert (own[0].role_prompt, own[0].route) == ("Be brief.", "fast")
    with pytest.raises(ValueError, match="at most 8"):
        personas.normalise_personas([PersonaSpec(name=f"P{i}") for i in range(9)])


def test_user_and_persona_turns_never_collide() -> None:
    """Round 1 by three personas, the user before round 2 and before round 3: every turn number once."""
    turns = [personas.turn_number(1, p, 3) for p in (1, 2, 3)]
    user_rounds: list[int] = []
    for rnd in (2, 3):
        turns.append(personas.user_turn_number(rnd, 3, len(user_rounds)))
        user_rounds.append(rnd)
        turns += [personas.turn_number(rnd, p, 3, personas.user_turns_up_to(rnd, user_rounds)) for p in (1, 2, 3)]
    assert turns == list(range(1, 12))


# ---- prompt context ---------------------------------------------------------------------------------
def _ctx(msgs: list[Msg], summary: prompts.SummaryRef | None = None, files=None) -> prompts.Context:
    return prompts.Context(
        topic="How should we cache API responses?",
        personas=personas.default_personas(),
        messages=msgs,
        summary=summary,
        files=files or [],
    )


def test_first_speaker_gets_topic_and_files_only_in_round_one() -> None:
    files = [prompts.FileText("spec.pdf", "The API serves 10k rps.")]
    first = prompts.turn_messages(_ctx([], files=files), 0, 1)
    assert first[0].role == "system" and "Analyzer" in first[0].content
    user = first[1].content
    assert "Topic: How should we cache API responses?" in user
    assert "The API serves 10k rps." in user and "You open the discussion." in user
    second = prompts.turn_messages(_ctx([Msg("Analyzer", "Risky.", 1, 1)], files=files), 1, 1)
    assert "10k rps" not in second[1].content
    assert "Analyzer just said:\nRisky." in second[1].content


def test_context_without_summary_has_every_round() -> None:
    msgs = [Msg(n, f"{n} says r{r}.", r, (r - 1) * 3 + i + 1) for r in (1, 2) for i, n in enumerate(NAMES)]
    text = prompts.turn_messages(_ctx(msgs), 0, 3)[1].content
    assert "--- Round 1 ---" in text and "--- Round 2 ---" in text
    assert "Analyzer says r1." in text and "Moderator just said:\nModerator says r2." in text
    assert "Summary" not in text


def test_context_with_summary_replaces_covered_rounds() -> None:
    msgs = [Msg(n, f"{n} says r{r}.", r, (r - 1) * 3 + i + 1) for r in (1, 2, 3) for i, n in enumerate(NAMES)]
    msgs.append(Msg("User", "Please keep it cheap.", 3, 6))
    ctx = _ctx(msgs, summary=prompts.SummaryRef(2, "They agreed on Redis."))
    text = prompts.turn_messages(ctx, 1, 3)[1].content
    assert "Summary of the discussion up to round 2:\nThey agreed on Redis." in text
    assert "r1." not in text and "r2." not in text
    assert "Analyzer says r3." in text
    assert [m.round for m in prompts.visible_messages(ctx)] == [3, 3, 3, 3]


def test_user_message_is_what_the_previous_speaker_said() -> None:
    msgs = [Msg("Moderator", "Done.", 1, 3), Msg("User", "Consider cost.", 2, 3)]
    ctx = _ctx(msgs)
    ctx.messages.sort(key=lambda m: (m.round, m.turn))
    text = prompts.turn_messages(ctx, 0, 2)[1].content
    assert "The user just said:\nConsider cost." in text


def test_continue_messages_carry_the_partial_answer() -> None:
    base = prompts.turn_messages(_ctx([]), 0, 1)
    cont = prompts.continue_messages(base, "We should cache at the")
    assert cont[-2].role == "assistant" and cont[-2].content == "We should cache at the"
    assert "cut off" in cont[-1].content


# ---- resolution -------------------------------------------------------------------------------------
def _round(r: int, texts: list[str]) -> list[Msg]:
    return [Msg(n, t, r, (r - 1) * 3 + i + 1) for i, (n, t) in enumerate(zip(NAMES, texts, strict=True))]


AGREE = [
    "I agree with the Solver; the plan is settled and we have consensus.",
    "Building on that, I agree: we agreed on a read-through cache.",
    "We all agree and the discussion is resolved.\nSolution: Put a Redis read-through cache with a 60 second TTL "
    "in front of the API and invalidate on writes.",
]
DEBATE = [
    "There are risks with stale data we have not looked at.",
    "We could add a cache layer with a TTL.",
    "Let us look at invalidation next round.",
]


def _transcript(agree_rounds: set[int], upto: int) -> list[Msg]:
    out: list[Msg] = []
    for r in range(1, upto + 1):
        out += _round(r, AGREE if r in agree_rounds else DEBATE)
    return out


def test_resolved_after_consensus_with_solution() -> None:
    a = resolution.assess(_transcript({5, 6}, 6), NAMES, 6, 20)
    assert a.resolved and a.consensus and a.agreement_ratio == 1.0
    assert a.solution is not None and a.solution.startswith("Put a Redis read-through cache")


def test_resolved_in_a_single_strong_round() -> None:
    a = resolution.assess(_transcript({5}, 5), NAMES, 5, 20)
    assert a.resolved and not a.consensus


def test_not_before_round_five() -> None:
    a = resolution.assess(_transcript({3, 4}, 4), NAMES, 4, 20)
    assert not a.resolved and "not before round 5" in a.reasons[0]


def test_not_yet_when_still_debating() -> None:
    a = resolution.assess(_transcript(set(), 6), NAMES, 6, 20)
    assert not a.resolved and a.score < 0.3


def test_negated_keywords_are_ignored() -> None:
    negated = [
        "We have not reached consensus; nothing is agreed and it is far from resolved.",
        "There is no agreement yet on the approach.",
        "We haven't agreed.\nSolution: Put a Redis read-through cache in front of the API for now.",
    ]
    msgs = _transcript(set(), 5)[:-3] + _round(5, negated)
    a = resolution.assess(msgs, NAMES, 5, 20)
    assert a.keyword_hits == 0 and a.agreement_ratio == 0
    assert not a.resolved
    assert resolution.count_keywords("no consensus, but consensus on caching") == 1
    assert not resolution.expresses_agreement("I don't agree with that at all.")
    assert not resolution.expresses_agreement("I do not agree.")
    assert resolution.expresses_agreement("Good point, I agree.")


def test_agreement_without_solution_is_not_resolved() -> None:
    no_solution = [AGREE[0], AGREE[1], "We all agree and the discussion is resolved."]
    msgs = _transcript({5}, 5)[:-3] + _round(5, [*AGREE[:2], no_solution[2]]) + _round(6, no_solution)
    a = resolution.assess(msgs, NAMES, 6, 20)
    assert a.score >= 0.55 and a.solution is None and not a.resolved
    assert "no solution statement" in a.reasons


def test_invalid_solution_statements_are_rejected() -> None:
    assert resolution.validate_solution("TBD") is None
    assert resolution.validate_solution("Should we use Redis for this?") is None
    assert resolution.validate_solution("none") is None
    assert resolution.validate_solution("No solution was found by the group.") is None
    assert resolution.validate_solution("Use Redis") is None  # too short
    inline = "We all agree. Solution: Use Redis with a short TTL and invalidate on writes."
    assert resolution.extract_solution([Msg("Moderator", inline, 5, 15)]) == (
        "Use Redis with a short TTL and invalidate on writes."
    )
    good = "**Solution:** Use Redis with a short TTL and invalidate on every write."
    assert resolution.extract_solution([Msg("Moderator", good, 5, 15)]) == (
        "Use Redis with a short TTL and invalidate on every write."
    )


def test_max_rounds_resolved_only_with_solution() -> None:
    debating = _transcript(set(), 3)
    a = resolution.assess(debating, NAMES, 3, 3)
    assert not a.resolved and "no solution could be extracted" in a.reasons
    with_solution = [
        *debating[:-1],
        Msg("Moderator", "Final solution: cache responses in Redis with a 60 s TTL.", 3, 9),
    ]
    b = resolution.assess(with_solution, NAMES, 3, 3)
    assert b.resolved and b.solution == "cache responses in Redis with a 60 s TTL."


def test_final_answer_length_is_fitted() -> None:
    short = resolution.fit_final_answer("Use Redis.", "Use Redis with a TTL of sixty seconds.")
    assert 500 <= len(short) <= 1000 and "Use Redis with a TTL" in short
    long = resolution.fit_final_answer("This is a sentence about caching. " * 60, "x")
    assert 300 <= len(long) <= 1000 and long.endswith(".")


# ---- questions --------------------------------------------------------------------------------------
def test_parse_valid_questions_assigns_ids() -> None:
    text = json.dumps(
        {
            "questions": [
                {"text": "Budget?", "options": ["Low", "High"]},
                {"text": "Latency target?", "options": [{"text": "<50ms"}, {"text": "<200ms"}, {"text": "any"}]},
            ]
        }
    )
    r = questions.parse_questions(text)
    assert not r.fallback
    assert [q.id for q in r.questions] == ["q1", "q2"]
    assert [o.id for o in r.questions[1].options] == ["q2o1", "q2o2", "q2o3"]
    assert r.questions[1].options[0].text == "<50ms"


def test_parse_fenced_json_with_trailing_text() -> None:
    text = (
        'Sure! Here you go:\n```json\n[{"question": "A?", "choices": ["x", "y"]}, '
        '{"question": "B?", "choices": ["x", "y"]}]\n```\nHope this helps {not json}'
    )
    r = questions.parse_questions(text)
    assert [q.text for q in r.questions] == ["A?", "B?"] and not r.fallback
    bare = questions.parse_questions(
        '{"questions": [{"text": "A?", "options": ["1", "2"]}, '
        '{"text": "B?", "options": ["1", "2"]}]} and some trailing words'
    )
    assert len(bare.questions) == 2


def test_parse_malformed_gives_fallback() -> None:
    for bad in ("", "no json here", '{"questions": [{"text": "A?", "options": ["x"', '{"foo": 1}'):
        r = questions.parse_questions(bad)
        assert r.fallback and len(r.questions) == 2 and r.problems
        assert all(len(q.options) >= 2 for q in r.questions)


def test_parse_too_few_and_too_many() -> None:
    one = questions.parse_questions(
        '{"questions": [{"text": "Only?", "options": ["a", "b"]}, {"text": "Bad", "options": ["a"]}]}'
    )
    assert one.fallback and len(one.questions) == 2 and one.questions[0].text == "Only?"
    many = [{"text": f"Q{i}?", "options": ["a", "b", "a"]} for i in range(8)]
    r = questions.parse_questions(json.dumps({"questions": many}))
    assert len(r.questions) == 5 and not r.fallback
    assert [o.text for o in r.questions[0].options] == ["a", "b"]  # duplicates dropped


def test_answers_validation_and_text() -> None:
    qs = [
        q.to_dict()
        for q in questions.parse_questions(
            '[{"text": "Budget?", "options": ["Low", "High"]}, {"text": "When?", "options": ["Now", "Later"]}]'
        ).questions
    ]
    assert questions.validate_answers(qs, {"q1": ["q1o2"]}) == []
    assert questions.validate_answers(qs, {"q9": ["q1o1"]}) == ["unknown question q9"]
    assert questions.validate_answers(qs, {"q1": ["q2o1"]}) == ["unknown option q2o1 for q1"]
    assert questions.validate_answers(qs, {}) == ["no answers given"]
    assert "Budget? → High" in questions.answers_text(qs, {"q1": ["q1o2"]})


# ---- summary / continuation / question triggers ------------------------------------------------------
def test_summary_triggers() -> None:
    assert policy.summary_due(3200, 4000, 2) == "tokens"
    assert policy.summary_due(3199, 4000, 2) is None
    assert policy.summary_due(100, 4000, 5) == "interval"
    assert policy.summary_due(100, 4000, 10) == "interval"
    assert policy.summary_due(3500, 4000, 5, last_summary_round=5) is None


def test_continuation_detection() -> None:
    assert policy.needs_continuation("A full sentence.", "length")
    assert policy.needs_continuation("We should cache at the", "stop")
    assert not policy.needs_continuation("A full sentence.", "stop")
    assert not policy.needs_continuation('He said "done."', "stop")
    assert not policy.needs_continuation("Is it?", None)
    assert not policy.needs_continuation("", "length")
    assert policy.join_continuation("We should cache at the", "edge.") == "We should cache at the edge."
    assert policy.join_continuation("Done", ".") == "Done."


def test_question_triggers() -> None:
    topic = "How should we cache API responses?"
    on_topic = _round(3, ["Caching API responses needs TTLs.", "Cache the responses.", "API cache it is."])
    assert policy.question_trigger(topic, on_topic, 2) is None
    assert policy.question_trigger(topic, on_topic, 3) is None
    direct = _round(3, ["Caching responses.", "Cache API calls.", "The user should tell us: what is your budget?"])
    assert policy.question_trigger(topic, direct, 3).reason == "direct-question"
    confused = _round(3, ["It is unclear what responses matter.", "I'm not sure what API load is.", "Cache."])
    assert policy.question_trigger(topic, confused, 3).reason == "confusion"
    drift = _round(3, ["Football is great.", "The weather is nice.", "Let us talk about holidays."])
    assert policy.question_trigger(topic, drift, 3).reason == "drift"


def test_after_round_order() -> None:
    base = dict(
        topic="How should we cache API responses?",
        personas=NAMES,
        max_rounds=20,
        token_limit=4000,
        last_summary_round=0,
        auto_mode=False,
        has_question_set=False,
    )
    msgs = _transcript({5}, 5)
    s = flow.RoundState(round=5, token_count=100, messages=msgs, **base)
    assert flow.after_round(s).action == "summary"
    assert flow.after_round(s, summary_done=True).action == "final"
    s2 = flow.RoundState(round=2, token_count=100, messages=_transcript(set(), 2), **base)
    assert flow.after_round(s2).action == "wait"
    auto = flow.RoundState(round=2, token_count=100, messages=_transcript(set(), 2), **{**base, "auto_mode": True})
    assert flow.after_round(auto).action == "next_round"
    last = flow.RoundState(round=3, token_count=100, messages=_transcript(set(), 3), **{**base, "max_rounds": 3})
    assert flow.after_round(last).action == "completed"


# ---- markdown export --------------------------------------------------------------------------------
def test_markdown_export_neutralises_markup() -> None:
    evil = "<script>alert(1)</script> [click](javascript:alert(1)) ![x](http://evil/x.png)\n# Heading"
    view = {
        "topic": evil,
        "status": "waiting",
        "currentRound": 1,
        "maxRounds": 20,
        "personas": [{"name": "Analyzer"}],
        "messages": [{"persona": "Analyzer", "content": evil, "turn": 1, "round": 1}],
        "summaries": [],
        "questions": [],
        "resolution": None,
    }
    md = export.to_markdown(view)
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "](javascript" not in md and "\\[click\\]\\(javascript" in md
    assert "![x]" not in md
    assert "\n# Heading" not in md and "\\# Heading" in md
    assert md.startswith("# Discussion: ")


# ---- jsonb parameters -------------------------------------------------------------------------------
def test_jsonb_parameters_keep_the_stdlib_encoding_of_odd_values() -> None:
    """store.json_param (orjson) writes what json.dumps(value, default=str) wrote: datetimes as str() gives them,
    integer keys as strings, text as text."""
    from datetime import UTC, datetime

    from adp_dialogue import store

    when = datetime(2026, 12, 1, 16, 0, 0, 123456, tzinfo=UTC)
    value = {"at": when, "n": {1: "one"}, "text": "naïve “quotes”", "list": [1.5, None, True]}
    assert json.loads(store.json_param(value) or "") == json.loads(json.dumps(value, default=str))
    assert store.json_param(None) is None
