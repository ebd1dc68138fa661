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


def test_a_replayed_event_is_shown_once() -> None:
    first_time = message(2, "Solver", 1, 2, "Ship it behind a flag.")
    _, text = render([first_time, first_time, SseEvent("message-complete", first_time.data, "9")])
    assert text.count("Ship it behind a flag.") == 1


def test_streamed_chunks_then_the_complete_message_print_the_text_once() -> None:
    start = SseEvent("message-start", {"persona": "Solver", "round": 1, "turn": 2}, "1")
    chunks = [SseEvent("message-chunk", {"round": 1, "turn": 2, "chunk": c}) for c in ("Ship ", "it.")]
    _, text = render([start, *chunks, message(2, "Solver", 1, 2, "Ship it.")])
    assert text.count("Ship it.") == 1 and "(complete message)" not in text


def test_a_message_that_differs_from_its_stream_is_shown_as_stored() -> None:
    start = SseEvent("message-start", {"persona": "Solver", "round": 1, "turn": 2}, "1")
    chunk = SseEvent("message-chunk", {"round": 1, "turn": 2, "chunk": "Half an ans"})
    _, text = render([start, chunk, message(2, "Solver", 1, 2, "A different answer.")])
    assert text.index("(complete message)") < text.index("A different answer.")


def test_an_error_event_is_shown_and_ends_the_round() -> None:
    st, text = render([SseEvent("error", {"code": "LLM_TIMEOUT", "message": "slow"}, "3")])
    assert "error LLM_TIMEOUT: slow" in text and st.round_done and st.ended is None


def prompt_with(replies: list[str | None]) -> tuple[bool, list[tuple[str, dict[str, object]]], str]:
    """Run one prompt over `replies`; -> whether the client goes on, the commands it sent, what it printed."""
    answers = iter(replies)
    out = io.StringIO()
    args = argparse.Namespace(no_color=True, color="never", no_spinner=True, url="http://127.0.0.1:9", key="k")
    args.timeout, args.settle, args.round_timeout = 1.0, 0.0, 0.1
    d = Discuss(args, out, lambda _prompt: next(answers))
    d.st = DiscussionState("d1")
    sent: list[tuple[str, dict[str, object]]] = []

    def command(action: str, body: dict[str, object]) -> bool:
        sent.append((action, body))
        return True

    d.command = command  # type: ignore[method-assign]  # the gateway call, recorded instead of sent
    try:
        return d.prompt(), sent, out.getvalue()
    finally:
        d.client.close()


def test_prompt_asks_again_after_an_unknown_answer_then_proceeds() -> None:
    goes_on, sent, text = prompt_with(["zzz", "p"])
    assert goes_on and sent == [("proceed", {})] and "please answer p, a, i, s, x or q" in text


def test_prompt_sends_the_user_input_trimmed() -> None:
    goes_on, sent, _ = prompt_with(["i", "  keep it cheap  "])
    assert goes_on and sent == [("input", {"input": "keep it cheap"})]


def test_prompt_quit_and_end_of_input_leave_without_a_command() -> None:
    for replies in (["q"], [None]):
        goes_on, sent, _ = prompt_with(replies)
        assert not goes_on and sent == []


def test_prompt_stop_sends_stop_and_leaves() -> None:
    goes_on, sent, text = prompt_with(["x"])
    assert not goes_on and sent == [("stop", {})] and "stopped discussion d1" in text
