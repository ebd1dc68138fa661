"""A small stand-in for the gateway's client contract (docs/gateway.md), for console tests.

It serves the real console files and scripts discussions deterministically, so the browser tests can check
client behaviour the real platform cannot be made to show on demand: model output carrying markup, a stream
cut by the server mid-message, and exact counts of what was sent. The end-to-end tests run the same console
against the real platform (test_console_platform.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from adp_common import sse
from adp_common.schemas import events as ev
from adp_common.schemas.dialogue import TERMINAL_EVENT_NAMES, TERMINAL_STATUSES, PersonaSpec

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "src" / "adp_gateway" / "static"
PERSONAS = ("Analyzer", "Solver", "Moderator")
COMPONENTS = ("nats", "gateway", "dialogue", "llm-router", "cost", "alerts")


@dataclass
class Discussion:
    id: str
    topic: str
    personas: list[str]
    max_rounds: int
    status: str = "active"
    round: int = 0
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # durable: {seq, event, data}
    messages: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    resolution: dict[str, Any] | None = None
    listeners: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def now() -> str:
    return datetime.now(UTC).isoformat()


class FakeGateway:
    def __init__(self, *, chunk_delay: float = 0.01, words_per_message: int = 12, admin_key: str = "admin-key") -> None:
        self.chunk_delay = chunk_delay
        self.words = words_per_message
        self.keys = {admin_key: "admin", "user-key": "user"}
        self.discussions: dict[str, Discussion] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body)
        self.sse_connects: list[str | None] = []  # Last-Event-ID of each SSE connection
        self.sse_responses: set[web.StreamResponse] = set()
        self.gate: asyncio.Event | None = None  # when set: turns wait for it before each message
        self.alerts = [
            {
                "id": "al-1",
                "rule": "provider_error_rate",
                "subject": "groq",
                "severity": "critical",
                "state": "firing",
                "acknowledged": False,
                "message": "error rate 42% over 5 min (threshold 10%)",
                "started_at": datetime.now(UTC).isoformat(),
            }
        ]
        self.runner: web.AppRunner | None = None
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        r = app.router
        r.add_get("/", self.index)
        r.add_post("/api/discussions", self.create)
        r.add_get("/api/discussions", self.list)
        r.add_get("/api/discussions/{id}", self.get)
        r.add_get("/api/discussions/{id}/events", self.events)
        r.add_get("/api/discussions/{id}/export", self.export)
        r.add_post("/api/discussions/{id}/{action}", self.action)
        r.add_post("/api/files", self.files)
        r.add_get("/api/costs", self.costs)
        r.add_get("/api/monitoring/dashboard", self.dashboard)
        r.add_get("/api/alerts", self.list_alerts)
        r.add_post("/api/alerts/{id}/ack", self.ack)
        r.add_static("/", STATIC)
        self.runner = web.AppRunner(app, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for d in self.discussions.values():
            if d.task:
                d.task.cancel()
                with contextlib.suppress(BaseException):
                    await d.task
        await self.drop_streams()
        if self.runner:
            await self.runner.cleanup()

    async def drop_streams(self) -> None:
        """Cut every open SSE connection (what a network drop looks like to the server)."""
        for resp in list(self.sse_responses):
            with contextlib.suppress(Exception):
                resp.force_close()
                if resp._payload_writer and resp._payload_writer.transport:
                    resp._payload_writer.transport.abort()
        self.sse_responses.clear()

    # ---- helpers ---------------------------------------------------------------------------------------
    def auth(self, request: web.Request) -> str:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        role = self.keys.get(key)
        if role is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": {"code": "UNAUTHORIZED", "message": "missing or invalid API key"}}),
                content_type="application/json",
            )
        return role

    def find(self, request: web.Request) -> Discussion:
        self.auth(request)
        d = self.discussions.get(request.match_info["id"])
        if d is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "DISCUSSION_NOT_FOUND", "message": "no such discussion"}}),
                content_type="application/json",
            )
        return d

    def emit(self, d: Discussion, event: str, payload: ev.Payload, durable: bool = True) -> None:
        """An event built from its contract model (adp_common.schemas.events), as the real gateway sends it."""
        assert isinstance(payload, ev.PAYLOADS[event]), (event, type(payload))
        data = payload.model_dump(mode="json", exclude_none=True)
        item: dict[str, Any] = {"event": event, "data": {**data, "discussionId": d.id}, "seq": 0}
        if durable:
            d.seq += 1
            item["seq"] = d.seq
            d.events.append(item)
        for q in list(d.listeners):
            q.put_nowait(item)

    def view(self, d: Discussion) -> dict[str, Any]:
        return {
            "id": d.id,
            "userId": "u1",
            "topic": d.topic,
            "status": d.status,
            "currentRound": d.round,
            "maxRounds": d.max_rounds,
            "messages": d.messages,
            "questions": d.questions,
            "summaries": d.summaries,
            "resolution": d.resolution,
            "createdAt": d.created,
        }

    # ---- the scripted discussion -----------------------------------------------------------------------
    def text_for(self, d: Discussion, persona: str, rnd: int) -> str:
        words = [f"{persona.lower()}-r{rnd}-w{i}" for i in range(self.words)]
        return f"{persona} thinks about «{d.topic}»: " + " ".join(words)

    def message(self, d: Discussion, persona: str, content: str, rnd: int) -> ev.Message:
        """A message with the next turn number (turns are unique within a discussion, the user's included)."""
        turn = len(d.messages) + 1
        msg = ev.Message(id=f"m-{rnd}-{turn}", persona=persona, content=content, round=rnd, turn=turn, createdAt=now())
        d.messages.append(msg.model_dump(mode="json", exclude_none=True))
        return msg

    async def run_round(self, d: Discussion, user_input: str | None = None) -> None:
        d.round += 1
        d.status = "active"
        rnd = d.round
        if user_input:
            self.emit(d, "message-complete", ev.MessageComplete(message=self.message(d, "User", user_input, rnd)))
        done: list[ev.Message] = []
        for persona in d.personas:
            turn = len(d.messages) + 1
            if self.gate is not None:
                await self.gate.wait()
            self.emit(d, "message-start", ev.MessageStart(persona=persona, turn=turn, round=rnd))
            text = self.text_for(d, persona, rnd)
            pieces = text.split(" ")
            for i, piece in enumerate(pieces):
                chunk = piece if i == 0 else " " + piece
                data = ev.MessageChunk(persona=persona, turn=turn, round=rnd, chunk=chunk)
                self.emit(d, "message-chunk", data, False)
                await asyncio.sleep(self.chunk_delay)
            done.append(self.message(d, persona, text, rnd))
            self.emit(d, "message-complete", ev.MessageComplete(message=done[-1]))
        self.emit(d, "round-complete", ev.RoundComplete(round=ev.RoundInfo(number=rnd, messages=done)))
        if rnd >= d.max_rounds:
            d.status = "resolved"
            final = f"Final answer about «{d.topic}»"
            res = ev.Resolution(resolved=True, round=rnd, solution="Agreed.", finalAnswer=final)
            d.resolution = res.model_dump(mode="json")
            self.emit(d, "discussion-resolved", ev.DiscussionResolved(resolution=res, finalAnswer=final))
            return
        d.status = "waiting"
        qs = {
            "id": f"qs-{rnd}",
            "roundNumber": rnd,
            "questions": [
                {
                    "id": f"q{rnd}-1",
                    "text": "Which constraint matters most?",
                    "options": [{"id": "o1", "text": "Cost"}, {"id": "o2", "text": "Speed"}],
                },
                {
                    "id": f"q{rnd}-2",
                    "text": "Who are the users?",
                    "options": [{"id": "o3", "text": "Developers"}, {"id": "o4", "text": "Operators"}],
                },
            ],
        }
        d.questions.append(qs)
        self.emit(d, "questions-generated", ev.QuestionsGenerated(questionSet=qs, roundNumber=rnd))

    def start_round(self, d: Discussion, user_input: str | None = None) -> None:
        d.task = asyncio.get_running_loop().create_task(self.run_round(d, user_input))

    # ---- handlers --------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def create(self, request: web.Request) -> web.Response:
        self.auth(request)
        body = await request.json()
        self.requests.append(("POST", request.path, body))
        personas = [p["name"] if isinstance(p, dict) else p for p in body.get("personas") or PERSONAS]
        d = Discussion(uuid.uuid4().hex[:12], body["topic"], personas, int(body.get("max_rounds") or 3))
        self.discussions[d.id] = d
        personas = [PersonaSpec(name=p) for p in d.personas]
        self.emit(
            d, "discussion-started", ev.DiscussionStarted(topic=d.topic, personas=personas, maxRounds=d.max_rounds)
        )
        self.start_round(d)
        return web.json_response(self.view(d), status=201)

    async def list(self, request: web.Request) -> web.Response:
        self.auth(request)
        return web.json_response({"discussions": [self.view(d) for d in self.discussions.values()]})

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.view(self.find(request)))

    async def action(self, request: web.Request) -> web.Response:
        d = self.find(request)
        action = request.match_info["action"]
        body = await request.json() if request.can_read_body else {}
        self.requests.append(("POST", request.path, body))
        if action in ("proceed", "answers"):
            self.start_round(d)
        elif action == "input":
            self.start_round(d, body.get("input"))
        elif action == "summary":
            content = f"Summary of {d.round} round(s)."
            s = ev.Summary(
                id=f"s-{d.round}", roundNumber=d.round, content=content, tokensBefore=100, tokensAfter=20,
                reason="requested", createdAt=now(),
            )  # fmt: skip
            d.summaries.append(s.model_dump(mode="json"))
            self.emit(d, "summary-created", ev.SummaryCreated(summary=s))
        elif action == "stop":
            if d.status not in TERMINAL_STATUSES:
                d.status = "stopped"
                self.emit(d, "discussion-stopped", ev.DiscussionStopped(round=d.round))
        else:
            raise web.HTTPNotFound()
        return web.json_response(self.view(d))

    async def events(self, request: web.Request) -> web.StreamResponse:
        d = self.find(request)
        last = request.headers.get("Last-Event-ID")
        self.sse_connects.append(last)
        after = int(last) if last and last.isdigit() else 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.sse_responses.add(resp)
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        d.listeners.add(q)
        try:
            sent = after
            for item in list(d.events):
                if item["seq"] > sent:
                    await resp.write(self.sse(item))
                    sent = item["seq"]
                    if item["event"] in TERMINAL_EVENT_NAMES:
                        return resp
            while True:
                item = await q.get()
                if item["seq"] and item["seq"] <= sent:
                    continue
                sent = max(sent, item["seq"])
                await resp.write(self.sse(item))
                if item["event"] in TERMINAL_EVENT_NAMES:
                    return resp
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            d.listeners.discard(q)
            self.sse_responses.discard(resp)
        return resp

    @staticmethod
    def sse(item: dict[str, Any]) -> bytes:
        return sse.encode(json.dumps(item["data"]), event=item["event"], id=item["seq"] or None).encode()

    async def export(self, request: web.Request) -> web.Response:
        d = self.find(request)
        if request.query.get("format") == "markdown":
            lines = [f"# {d.topic}", ""] + [f"**{m['persona']}**: {m['content']}" for m in d.messages]
            return web.Response(text="\n".join(lines), content_type="text/markdown")
        return web.json_response(self.view(d))

    async def files(self, request: web.Request) -> web.Response:
        self.auth(request)
        reader = await request.multipart()
        part = await reader.next()
        data = await part.read() if part is not None else b""
        name = part.filename if part is not None else "file"
        return web.json_response({"id": uuid.uuid4().hex, "name": name, "size": len(data)}, status=201)

    async def costs(self, request: web.Request) -> web.Response:
        self.auth(request)
        days = [f"2025-01-0{i}" for i in range(1, 8)]
        daily = [
            {"date": day, "provider": prov, "cost_usd": f"{(i + 1) * mult:.4f}"}
            for i, day in enumerate(days)
            for prov, mult in (("groq", 0.02), ("openai", 0.05), ("simulated", 0.0))
        ]
        return web.json_response(
            {
                "costByProvider": [{"key": "openai", "cost_usd": "1.40"}, {"key": "groq", "cost_usd": "0.56"}],
                "dailyCosts": daily,
                "budget": {"current": "0.35", "limit": "1.00", "percentage": 35.0, "exceeded": False},
                "userCost": "0.12",
            }
        )

    async def dashboard(self, request: web.Request) -> web.Response:
        if self.auth(request) != "admin":
            body = json.dumps({"error": {"code": "FORBIDDEN", "message": "admin only"}})
            raise web.HTTPForbidden(text=body, content_type="application/json")
        return web.json_response(
            {
                "health": {
                    "status": "UP",
                    "components": {s: {"status": "UP"} for s in COMPONENTS},
                },
                "metrics": {
                    "requests": 120,
                    "errorRate": 0.02,
                    "activeDiscussions": len(self.discussions),
                    "connections": 1,
                },
                "providers": [
                    {"name": "groq", "available": True, "successRate": 0.58, "latencyP50Ms": 420},
                    {"name": "openai", "available": True, "successRate": 0.99, "latencyP50Ms": 610},
                ],
                "circuitBreakers": {"groq": "open", "openai": "closed"},
                "alerts": self.alerts,
            }
        )

    async def list_alerts(self, request: web.Request) -> web.Response:
        self.auth(request)
        return web.json_response({"alerts": self.alerts})

    async def ack(self, request: web.Request) -> web.Response:
        self.auth(request)
        for a in self.alerts:
            if a["id"] == request.match_info["id"]:
                a["acknowledged"] = True
                a["acknowledged_by"] = "admin"
                return web.json_response(a)
        raise web.HTTPNotFound()
