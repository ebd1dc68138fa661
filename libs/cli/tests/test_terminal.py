"""`adp discuss` rendering and prompts as pure logic: events in, transcript out (no gateway)."""

from __future__ import annotations

import argparse
import io

from adp_cli.terminal.prompt import Discuss
from adp_cli.terminal.render import DiscussionState, Style, Terminal, apply_event
from adp_cli.terminal.transport import SseEvent


def render(events: list[SseEvent]) -> tuple[DiscussionState, str]:
    out = io.StringIO()
    st = DiscussionState("d1")
    term = Terminal(out, Style(color=False), spinner=False)
    for ev in events:
        apply_event(st, ev, term)
    return st, out.getvalue()


def message(seq: int, persona: str, rnd: int, turn: int, content: str) -> SseEvent:
    msg = {"id": f"m{seq}", "persona": persona, "round": rnd, "turn": turn, "content": content}
    return SseEvent("message-complete", {"message": msg}, str(seq))


def test_a_user_message_is_shown_under_its_round_header() -> None:
    _, text = render(
        [
            SseEvent("message-start", {"persona": "Analyzer", "round": 1, "turn": 1}, "1"),
            message(2, "Analyzer", 1, 1, "First thoughts."),
            SseEvent("round-complete", {"round": {"number": 1}}, "3"),
            message(4, "User", 2, 2, "Keep it cheap."),
            SseEvent("message-start", {"persona": "Analyzer", "round": 2, "turn": 3}, "5"),
        ]
    )
    assert text.index("── Round 2 ──") < text.index("● User") < text.index("Keep it cheap.")
    assert text.count("── Round 2 ──") == 1


def test_a_summary_is_labelled_once() -> None:
    summary = {"summary": {"id": "s1", "roundNumber": 1, "content": "Summary: the team agreed on X."}}
    _, text = render([SseEvent("summary-created", summary, "1")])
    assert text.count("Summary:") == 1 and "the team agreed on X." in text


def test_each_terminal_event_ends_the_discussion() -> None:
    for name, data, shown in [
        ("discussion-stopped", {"status": "stopped", "round": 2}, "Stopped after round 2"),
        ("discussion-completed", {"status": "completed", "round": 3}, "reached 3 round(s)"),
        ("discussion-failed", {"status": "failed", "code": "LLM_TIMEOUT", "message": "slow"}, "Failed: LLM_TIMEOUT"),
        ("discussion-resolved", {"status": "resolved", "finalAnswer": "Do X."}, "Resolved — final answer:\nDo X."),
    ]:
        st, text = render([SseEvent(name, data, "7")])
        assert st.ended == data["status"] and shown in text, (name, text)


def test_skipped_questions_are_left_out_of_the_answers() -> None:
    replies = iter(["", "2", ""])
    args = argparse.Namespace(no_color=True, color="never", no_spinner=True, url="http://127.0.0.1:9", key="k")
    args.timeout, args.settle = 1.0, 0.1
    d = Discuss(args, io.StringIO(), lambda _prompt: next(replies))
    qs = {
        "questions": [
            {"id": "q1", "text": "A?", "options": [{"id": "q1o1", "text": "a"}]},
            {"id": "q2", "text": "B?", "options": [{"id": "q2o1", "text": "b"}, {"id": "q2o2", "text": "c"}]},
            {"id": "q3", "text": "C?", "options": [{"id": "q3o1", "text": "d"}]},
        ]
    }
    try:
        assert d.ask_answers(qs) == {"q2": ["q2o2"]}
    finally:
        d.client.close()
