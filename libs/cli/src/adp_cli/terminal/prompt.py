"""`adp discuss`: the prompt loop — start the discussion, show its events, and between rounds ask what next
(proceed, answer questions, add input, summary, stop, quit).
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from adp_cli.terminal.render import DiscussionState, Style, Terminal, apply_event, use_color
from adp_cli.terminal.transport import EventReader, SseEvent
from adp_client import ApiError, Client, calls

# ---- `adp discuss` -----------------------------------------------------------------------------------------

PROMPT = "Next? [p]roceed [a]nswer questions [i]nput [s]ummary [x] stop [q]uit > "


class Discuss:
    def __init__(self, args: argparse.Namespace, out: TextIO, read_line: Callable[[str], str | None]) -> None:
        self.args = args
        self.out = out
        self.read_line = read_line
        color = use_color("never" if args.no_color else args.color, out)
        self.term = Terminal(out, Style(color), spinner=out.isatty() and not args.no_spinner)
        self.client = Client(args.url, args.key, timeout=args.timeout)
        self.events: queue.Queue[SseEvent | ApiError] = queue.Queue()
        self.reader: EventReader | None = None
        self.st: DiscussionState | None = None
        self.settle_s = args.settle

    def run(self) -> int:
        try:
            return self._run()
        finally:
            if self.reader is not None:
                self.reader.stop()
            self.client.close()

    def _run(self) -> int:
        s = self.term.style
        d = self.client.create_discussion(self.args.topic, max_rounds=self.args.rounds or None)
        did = d.id
        self.st = DiscussionState(did)
        self.term.line(s.bold("Topic: ") + self.args.topic)
        self.term.line(s.dim(f"discussion {did} · {self.client.base_url}"))
        self.reader = EventReader(self.client, did, self.events)
        self.reader.start()
        return self.loop()

    def pump(self, wait: float) -> bool:
        """Apply events for up to `wait` seconds; True if any arrived."""
        assert self.st is not None
        got = False
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                item = self.events.get(timeout=min(0.1, remaining))
            except queue.Empty:
                if self.st.thinking:
                    self.term.spin(self.st.thinking)
                continue
            if isinstance(item, ApiError):
                raise item
            got = True
            apply_event(self.st, item, self.term)

    def settle(self) -> None:
        """Keep applying events until the stream has been quiet for a moment (questions often follow a round)."""
        while self.pump(self.settle_s):
            pass

    def wait_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            self.pump(0.2)
        return True

    def loop(self) -> int:
        st = self.st
        assert st is not None
        s = self.term.style
        while True:
            self.wait_until(lambda: st.round_done or st.ended is not None, self.args.round_timeout)
            self.settle()
            if st.ended is not None:
                return 1 if st.ended == "failed" else 0
            if not st.round_done:
                self.term.line(s.error(f"no round completed within {self.args.round_timeout:.0f}s; giving up"))
                return 1
            if self.args.auto:
                if self.args.rounds and st.round >= self.args.rounds:
                    self.term.line(s.dim(f"reached {self.args.rounds} round(s); discussion {st.discussion_id}"))
                    return 0
                self.command("proceed", {})
                continue
            if not self.prompt():
                return 0

    def command(self, action: str, body: dict[str, Any]) -> bool:
        assert self.st is not None
        try:
            self.client.send(calls.act(self.st.discussion_id, action, body))
        except ApiError as exc:
            self.term.line(self.term.style.error(f"{action} failed: {exc}"))
            return False
        if action in ("proceed", "answers", "input"):
            self.st.round_done = False
        return True

    def prompt(self) -> bool:
        """Ask for the next action; returns False to leave the client."""
        st = self.st
        assert st is not None
        s = self.term.style
        while True:
            answer = self.read_line(PROMPT)
            if answer is None:
                self.term.line("")
                return False
            choice = answer.strip().lower()[:1]
            if choice == "p":
                if self.command("proceed", {}):
                    return True
            elif choice == "a":
                if st.question_set is None:
                    self.term.line(s.dim("asking the AIs for questions…"))
                    if not self.command("questions", {}):
                        continue
                    if not self.wait_until(lambda: st.question_set is not None, self.args.round_timeout):
                        self.term.line(s.error("no questions arrived"))
                        continue
                    self.settle()
                if st.question_set is None:  # withdrawn while settling
                    continue
                answers = self.ask_answers(st.question_set)
                if answers is None:
                    return False
                if not answers:
                    self.term.line(s.dim("every question skipped: nothing sent"))
                    continue
                body = {"roundNumber": int(st.question_set.get("roundNumber") or st.round), "answers": answers}
                if self.command("answers", body):
                    st.question_set = None
                    return True
            elif choice == "i":
                text = self.read_line("Your input: ")
                if text is None:
                    return False
                if text.strip() and self.command("input", {"input": text.strip()}):
                    return True
            elif choice == "s":
                before = len(st.summaries_seen)
                if self.command("summary", {}):
                    self.wait_until(lambda: len(st.summaries_seen) > before, self.args.round_timeout)  # noqa: B023 (waited on here)
                    self.settle()
            elif choice == "x":
                if self.command("stop", {}):
                    self.term.line(s.dim(f"stopped discussion {st.discussion_id}"))
                    return False
            elif choice == "q":
                self.term.line(s.dim(f"left discussion {st.discussion_id} (it stays open on the server)"))
                return False
            else:
                self.term.line("please answer p, a, i, s, x or q")

    def ask_answers(self, qs: dict[str, Any]) -> dict[str, list[str]] | None:
        answers: dict[str, list[str]] = {}
        for qi, q in enumerate(qs.get("questions") or [], 1):
            options = q.get("options") or []
            labels = ", ".join(f"{oi}) {o.get('text', '')}" for oi, o in enumerate(options, 1))
            while True:
                raw = self.read_line(f"Q{qi} {q.get('text', '')} [{labels}] choose (e.g. 1,2; empty to skip): ")
                if raw is None:
                    return None
                picks = [p for p in raw.replace(" ", ",").split(",") if p]
                if all(p.isdigit() and 1 <= int(p) <= len(options) for p in picks):
                    if picks:  # a skipped question is left out: the server takes answers to some questions
                        answers[str(q.get("id"))] = [str(options[int(p) - 1].get("id")) for p in picks]
                    break
                self.term.line(f"choose numbers between 1 and {len(options)}")
        return answers


def stdin_reader(prompt: str) -> str | None:
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if line == "":
        return None
    if not sys.stdin.isatty():
        sys.stdout.write(line if line.endswith("\n") else line + "\n")  # echo piped answers into the transcript
    return line.rstrip("\n")


def cmd_discuss(args: argparse.Namespace) -> int:
    try:
        return Discuss(args, sys.stdout, stdin_reader).run()
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.code == "NETWORK_ERROR" else 1
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
