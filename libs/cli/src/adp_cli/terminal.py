"""adp CLI commands for users (terminal client): `adp discuss`, `adp costs`, `adp alerts-list`.

Built only on the gateway's client contract (docs/gateway.md): Bearer API key, JSON endpoints and the
discussion event stream (Server-Sent Events, resumed with Last-Event-ID after a drop).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from adp_client import ApiError, Client, ClientEvent, calls
from adp_common.schemas.dialogue import TERMINAL_EVENT_NAMES

DEFAULT_URL = "http://127.0.0.1:8080"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
PERSONA_COLORS = {"analyzer": "35", "solver": "34", "moderator": "33", "user": "90"}  # purple, blue, amber, grey


# ---- events ------------------------------------------------------------------------------------------------


@dataclass
class SseEvent:
    """One discussion event as the terminal renders it: its name, its data (with discussionId) and its id."""

    event: str
    data: Any
    id: str | None = None

    @classmethod
    def of(cls, ev: ClientEvent) -> SseEvent:
        data = {**ev.data.model_dump(mode="json"), "discussionId": ev.discussionId}
        return cls(ev.event, data, None if ev.id is None else str(ev.id))


class EventReader(threading.Thread):
    """Reads a discussion's events (adp_client: resumed with Last-Event-ID after any drop, ended by the
    terminal event) into a queue."""

    def __init__(self, client: Client, discussion_id: str, out: queue.Queue[SseEvent | ApiError]) -> None:
        super().__init__(daemon=True, name="adp-sse")
        self.client = client
        self.discussion_id = discussion_id
        self.out = out
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            for ev in self.client.events(self.discussion_id):
                if self.stopping.is_set():
                    return
                self.out.put(SseEvent.of(ev))
        except ApiError as err:
            self.out.put(err)


# ---- terminal output ---------------------------------------------------------------------------------------


@dataclass
class Style:
    color: bool

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def persona(self, name: str) -> str:
        code = PERSONA_COLORS.get(name.lower(), "36")
        return self.paint(name, f"1;{code}")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def bold(self, text: str) -> str:
        return self.paint(text, "1")

    def error(self, text: str) -> str:
        return self.paint(text, "1;31")

    def ok(self, text: str) -> str:
        return self.paint(text, "1;32")


def use_color(mode: str, stream: TextIO) -> bool:
    if mode == "never":
        return False
    if mode == "always":
        return True
    return stream.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


@dataclass
class Bubble:
    persona: str
    round: int
    printed: str = ""
    complete: bool = False


@dataclass
class DiscussionState:
    """What the terminal has shown so far; applies each event once (seq and message-id de-duplication)."""

    discussion_id: str
    last_seq: int = 0
    round: int = 0
    bubbles: dict[str, Bubble] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    question_set: dict[str, Any] | None = None
    question_sets_seen: set[str] = field(default_factory=set)
    summaries_seen: set[str] = field(default_factory=set)
    resolved: bool = False
    ended: str | None = None  # the terminal status (completed, stopped, resolved, failed) once announced
    final_answer: str | None = None
    round_done: bool = False
    thinking: str | None = None  # persona whose first token we are waiting for
    open_line: bool = False  # a streamed message is being written on the current line


class Terminal:
    """Renders discussion events; a spinner runs while a persona is thinking (TTY only)."""

    def __init__(self, out: TextIO, style: Style, spinner: bool) -> None:
        self.out = out
        self.style = style
        self.spinner_on = spinner
        self.frames = itertools.cycle(SPINNER)
        self.spinner_shown = False

    def write(self, text: str) -> None:
        self.clear_spinner()
        self.out.write(text)
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def spin(self, persona: str) -> None:
        if not self.spinner_on:
            return
        self.out.write(f"\r{next(self.frames)} {self.style.persona(persona)} {self.style.dim('is thinking…')}\x1b[K")
        self.out.flush()
        self.spinner_shown = True

    def clear_spinner(self) -> None:
        if self.spinner_shown:
            self.out.write("\r\x1b[K")
            self.spinner_shown = False


def apply_event(st: DiscussionState, ev: SseEvent, term: Terminal) -> None:
    """Show one event (idempotent: replays and duplicates are ignored)."""
    if ev.id and ev.id.isdigit():
        seq = int(ev.id)
        if seq <= st.last_seq:
            return
        st.last_seq = seq
    d: dict[str, Any] = ev.data if isinstance(ev.data, dict) else {}
    s = term.style
    name = ev.event
    if name == "message-start":
        rnd, turn, persona = int(first(d.get("round"), st.round) or 0), d.get("turn"), str(d.get("persona") or "?")
        enter_round(st, rnd, term)
        key = f"{rnd}:{turn}"
        b = st.bubbles.get(key)
        if b is not None and b.complete and not d.get("restart"):
            return
        if b is not None and d.get("restart"):
            end_line(st, term)
            term.line(s.dim(f"({persona} restarted on another provider)"))
        end_line(st, term)
        st.bubbles[key] = Bubble(persona, rnd)
        term.line(f"● {s.persona(persona)}")
        st.thinking = persona
    elif name == "message-chunk":
        key = f"{first(d.get('round'), st.round)}:{d.get('turn')}"
        b = st.bubbles.get(key)
        if b is None:
            b = st.bubbles[key] = Bubble(str(d.get("persona") or "?"), int(first(d.get("round"), st.round) or 0))
            end_line(st, term)
            term.line(f"● {s.persona(b.persona)}")
        if b.complete:
            return
        chunk = str(first(d.get("chunk"), d.get("delta"), ""))
        st.thinking = None
        b.printed += chunk
        st.open_line = True
        term.write(chunk)
    elif name == "message-complete":
        m = d.get("message") or d
        msg_id = first(m.get("id"), m.get("messageId"))
        if msg_id and msg_id in st.message_ids:
            return
        if msg_id:
            st.message_ids.add(str(msg_id))
        persona = str(first(m.get("persona"), m.get("personaName"), m.get("role"), "?"))
        rnd = int(first(m.get("round"), m.get("roundNumber"), st.round) or 0)
        enter_round(st, rnd, term)  # a User message opens its round: the header comes first
        key = f"{rnd}:{m.get('turn')}"
        b = st.bubbles.get(key)
        content = str(first(m.get("content"), m.get("text"), ""))
        if b is None:  # never saw it stream (e.g. a User message, or it finished while we were away)
            end_line(st, term)
            b = st.bubbles[key] = Bubble(persona, rnd)
            term.line(f"● {s.persona(persona)}")
        if content.startswith(b.printed):
            rest = content[len(b.printed) :]
            if rest:
                term.write(rest)
        else:  # the stream was interrupted or restarted: show the message as stored
            term.line("")
            term.line(s.dim("(complete message)"))
            term.write(content)
        b.printed = content
        b.complete = True
        st.thinking = None
        st.open_line = True
        end_line(st, term)
    elif name == "round-complete":
        end_line(st, term)
        done = d.get("round")
        if isinstance(done, dict):
            done = first(done.get("number"), done.get("roundNumber"))
        term.line(s.dim(f"── round {first(done, st.round)} complete ──"))
        st.round_done = True
        st.thinking = None
    elif name == "questions-generated":
        qs = d.get("questionSet") or {}
        qs_id = str(first(qs.get("id"), qs.get("roundNumber"), d.get("roundNumber"), ""))
        if qs_id in st.question_sets_seen or not qs.get("questions"):
            return
        st.question_sets_seen.add(qs_id)
        st.question_set = {**qs, "roundNumber": first(qs.get("roundNumber"), d.get("roundNumber"), st.round)}
        end_line(st, term)
        term.line(s.bold("Questions for you:"))
        for qi, q in enumerate(qs.get("questions") or [], 1):
            term.line(f"  {qi}. {q.get('text', '')}")
            for oi, opt in enumerate(q.get("options") or [], 1):
                term.line(f"     {oi}) {opt.get('text', '')}")
    elif name == "summary-created":
        summ = d.get("summary") or {}
        if isinstance(summ, dict):
            text = str(first(summ.get("content"), summ.get("text"), summ.get("summary"), ""))
        else:
            text = str(summ)
        key = str(summ.get("id") if isinstance(summ, dict) and summ.get("id") else text[:80])
        if key in st.summaries_seen:
            return
        st.summaries_seen.add(key)
        end_line(st, term)
        body = text.strip()
        if body[:8].lower() == "summary:":  # the Moderator often starts with the label already
            body = body[8:].lstrip()
        term.line(s.bold("Summary: ") + body)
    elif name in TERMINAL_EVENT_NAMES:
        show_end(st, name, d, term)
    elif name == "error":
        end_line(st, term)
        term.line(s.error(f"error {d.get('code', '')}: {d.get('message', '')}".strip()))
        st.round_done = True
        st.thinking = None


def enter_round(st: DiscussionState, rnd: int, term: Terminal) -> None:
    """Print the header of round `rnd` the first time anything of it is shown."""
    if rnd > st.round:
        st.round = rnd
        st.round_done = False
        end_line(st, term)
        term.line(term.style.bold(f"── Round {rnd} ──"))


def show_end(st: DiscussionState, name: str, d: dict[str, Any], term: Terminal) -> None:
    """The discussion's terminal event: say how it ended; nothing more will come."""
    s = term.style
    end_line(st, term)
    st.ended = name.removeprefix("discussion-")
    st.thinking = None
    if name == "discussion-resolved":
        res = d.get("resolution")
        answer = first(d.get("finalAnswer"), res.get("finalAnswer") if isinstance(res, dict) else None)
        st.resolved = True
        st.final_answer = str(answer) if answer is not None else None
        term.line(s.ok("✔ Resolved") + (f" — final answer:\n{answer}" if answer else ""))
    elif name == "discussion-completed":
        term.line(s.bold(f"■ Completed: reached {first(d.get('round'), st.round)} round(s), the maximum"))
    elif name == "discussion-stopped":
        term.line(s.dim(f"■ Stopped after round {first(d.get('round'), st.round)}"))
    else:
        term.line(s.error(f"✖ Failed: {d.get('code', '')} {d.get('message', '')}".rstrip()))


def end_line(st: DiscussionState, term: Terminal) -> None:
    if st.open_line:
        term.line("")
        st.open_line = False


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


# ---- tables: `adp costs`, `adp alerts-list` ----------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], max_width: int = 60) -> str:
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*r).rstrip() for r in cells]
    return "\n".join(out)


def usd(value: Any) -> str:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    return f"${d:.4f}" if d and abs(d) < 1 else f"${d:.2f}"


def cmd_costs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("startDate", args.start), ("endDate", args.end), ("userId", args.user)) if v}
    try:
        with Client(args.url, args.key, timeout=args.timeout) as client:
            c = client.costs(**params).model_dump(mode="json")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.code == "NETWORK_ERROR" else 1
    if args.json:
        print(json.dumps(c, indent=2))
        return 0
    b = c.get("budget") or {}
    if b:
        cur, lim = Decimal(str(b.get("current", 0))), Decimal(str(b.get("limit", 0)))
        pct = float(cur / lim * 100) if lim else float(b.get("percentage") or 0)
        flag = "  EXCEEDED" if b.get("exceeded") else ""
        print(f"Budget today: {usd(cur)} of {usd(lim) if lim else 'no limit'} ({pct:.1f}%){flag}")
    if c.get("userCost") is not None:
        print(f"Your cost: {usd(c['userCost'])}")
    print()
    by_prov = c.get("costByProvider") or []
    rows = [
        [
            str(first(r.get("key"), r.get("provider"), "?")),
            usd(first(r.get("cost_usd"), r.get("cost"), 0)),
            str(r.get("requests", "")),
            str(r.get("input_tokens", "")),
            str(r.get("output_tokens", "")),
        ]
        for r in by_prov
    ]
    print("Cost by provider")
    print(table(["PROVIDER", "COST", "REQUESTS", "IN TOKENS", "OUT TOKENS"], rows) if rows else "(none)")
    print()
    daily = sorted(c.get("dailyCosts") or [], key=lambda r: (str(r.get("date")), str(r.get("provider"))))
    drows = [[str(r.get("date")), str(r.get("provider")), usd(r.get("cost_usd", 0))] for r in daily]
    print("Daily cost")
    print(table(["DATE", "PROVIDER", "COST"], drows) if drows else "(none)")
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    try:
        with Client(args.url, args.key, timeout=args.timeout) as client:
            alerts = [a.model_dump(mode="json") for a in client.alerts().alerts]
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if exc.code == "NETWORK_ERROR" else 1
    if not args.all:
        alerts = [a for a in alerts if a.get("state", "firing") != "resolved"]
    if args.json:
        print(json.dumps(alerts, indent=2))
        return 0
    if not alerts:
        print("no active alerts" if not args.all else "no alerts")
        return 0
    rows = [
        [
            str(a.get("id", "")),
            str(a.get("severity", "")),
            str(a.get("rule", "")),
            str(a.get("subject", "")),
            str(a.get("state", "")),
            "yes" if a.get("acknowledged") else "no",
            str(a.get("started_at", ""))[:19],
            str(a.get("message", "")),
        ]
        for a in alerts
    ]
    print(table(["ID", "SEVERITY", "RULE", "SUBJECT", "STATE", "ACK", "SINCE", "MESSAGE"], rows))
    return 0


# ---- registration ------------------------------------------------------------------------------------------


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("ADP_URL", DEFAULT_URL), help="gateway URL (env ADP_URL)")
    p.add_argument("--key", default=os.environ.get("ADP_API_KEY"), help="API key (env ADP_API_KEY)")
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the `adp` parser."""
    p = sub.add_parser("discuss", help="start a discussion and watch it live in the terminal")
    p.add_argument("topic", help="what the AIs should discuss")
    add_connection_args(p)
    p.add_argument("--rounds", type=int, default=None, help="maximum number of rounds")
    p.add_argument("--auto", action="store_true", help="proceed automatically after every round (no prompt)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="persona colours")
    p.add_argument("--no-color", action="store_true", help="same as --color never")
    p.add_argument("--no-spinner", action="store_true", help="no progress indicator")
    p.add_argument("--round-timeout", type=float, default=300.0, help="give up when a round takes longer")
    p.add_argument("--settle", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_discuss)

    p = sub.add_parser("costs", help="cost by provider, per day, and today's budget (GET /api/costs)")
    add_connection_args(p)
    p.add_argument("--start", help="start date YYYY-MM-DD")
    p.add_argument("--end", help="end date YYYY-MM-DD")
    p.add_argument("--user", help="user id (admins)")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_costs)

    p = sub.add_parser("alerts-list", help="alerts as the gateway shows them (GET /api/alerts)")
    add_connection_args(p)
    p.add_argument("--all", action="store_true", help="include resolved alerts")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=cmd_alerts_list)
