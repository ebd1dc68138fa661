"""Socket.IO at /socket.io for the original web client: same auth, same event names and payloads as SSE.

Each socket gets a forwarder per discussion it started, acted on or joined (it also enters a room named
after the discussion). Forwarders are per socket, so ordering and de-duplication are exact per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import (
    MAX_EVENT_SEQ,
    AnswersCommand,
    Command,
    DialogueQuery,
    DiscussionView,
    InputCommand,
    ProceedCommand,
    QuestionsCommand,
    StopCommand,
    SummaryCommand,
    UserText,
)
from adp_gateway.auth import Principal, bearer_token
from adp_gateway.context import GatewayContext
from adp_gateway.deps import DISCUSSION_ID_PATTERN
from adp_gateway.errors import validation_message
from adp_gateway.events import EventStream, Heartbeat, Overflow, event_payload
from adp_gateway.routes.discussions import CreateDiscussion
from adp_gateway.sessions import Session

log = logging.getLogger("adp.gateway.sio")


class _In(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class StartDialogue(CreateDiscussion):
    """The options of POST /api/discussions (topic, personas, maxRounds, files, auto); unknown keys ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class OnDiscussion(_In):
    discussionId: str = Field(pattern=DISCUSSION_ID_PATTERN.pattern)
    roundNumber: int | None = Field(default=None, ge=0, le=1000)


class SubmitAnswers(OnDiscussion):
    answers: dict[str, list[str]] = Field(max_length=50)


class UserInput(OnDiscussion):
    input: UserText


class JoinDiscussion(OnDiscussion):
    lastEventId: int = Field(default=0, ge=0, le=MAX_EVENT_SEQ)


def refused(code: ErrorCode, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection whose connect_error packet is the `{code, message}` error object; `data` repeats
    it because the JavaScript client exposes only `err.message` and `err.data`."""
    err = socketio.exceptions.ConnectionRefusedError(message)
    err.error_args = {"code": code.value, "message": message, "data": {"code": code.value, "message": message}}
    return err


# The client events: name, payload model, and the rate-limit action it counts against (None: not limited).
CLIENT_EVENTS: tuple[tuple[str, type[BaseModel], str | None], ...] = (
    ("start-dialogue", StartDialogue, "start"),
    ("proceed-dialogue", OnDiscussion, "proceed"),
    ("submit-answers", SubmitAnswers, "answers"),
    ("user-input", UserInput, "answers"),
    ("generate-summary", OnDiscussion, "summary"),
    ("generate-questions", OnDiscussion, "questions"),
    ("stop-dialogue", OnDiscussion, None),
    ("join-discussion", JoinDiscussion, None),
)


def connect_token(environ: dict[str, Any], auth: Any) -> str | None:
    """The API key from the Socket.IO auth payload, else from the Authorization header."""
    token = None
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        token = auth["token"].removeprefix("Bearer ").strip()
    if not token:
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
    return token


def parse_event(event: str, model: type[BaseModel], data: Any) -> BaseModel:
    """The event's payload as its model, or the validation error a client is told."""
    if not isinstance(data, dict):
        raise PlatformError(ErrorCode.VALIDATION_ERROR, f"{event} needs an object payload")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        code = ErrorCode.INVALID_DISCUSSION_ID if "discussionId" in str(err) else None
        raise PlatformError(code or ErrorCode.VALIDATION_ERROR, validation_message(err)) from None


class SocketGateway:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        origins = ctx.settings.cors_origin_list
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins=("*" if "*" in origins else origins) if origins else None,
            logger=False,
            engineio_logger=False,
            max_http_buffer_size=1_000_000,
        )
        self.principals: dict[str, Principal] = {}
        self.ips: dict[str, str] = {}
        self.tokens: dict[str, str | None] = {}
        self.handles: dict[str, int] = {}
        self.forwarders: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._register()

    def asgi(self, other: Any) -> socketio.ASGIApp:
        return socketio.ASGIApp(self.sio, other_asgi_app=other, socketio_path="socket.io")

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def close(self) -> None:
        for sid in list(self.principals):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        for tasks in self.forwarders.values():
            for t in tasks.values():
                t.cancel()
        with contextlib.suppress(Exception):
            await self.sio.shutdown()

    async def end_revoked(self, sid: str) -> None:
        """The connection's key was revoked or its user disabled: tell the client, then close it."""
        with contextlib.suppress(Exception):
            await self.error(sid, ErrorCode.UNAUTHORIZED, "API key revoked or user disabled")
        await self.sio.disconnect(sid)

    async def current_principal(self, sid: str) -> Principal | None:
        """The connection's principal, authenticated again for every action (a key revoked since the
        connection opened is refused even if the notice to close the connection was lost)."""
        if sid not in self.principals:
            return None
        try:
            return await self.ctx.authenticate(self.tokens.get(sid), self.ips.get(sid))
        except PlatformError:
            return self.principals.get(sid)  # the key store is unreachable: the connection's own check stands

    async def error(self, sid: str, code: ErrorCode | str, message: str, discussion_id: str | None = None) -> None:
        payload: dict[str, Any] = {"code": str(code), "message": message}
        if discussion_id:
            payload["discussionId"] = discussion_id
        await self.sio.emit("error", payload, to=sid)

    # ---- forwarding -----------------------------------------------------------------------------------
    async def follow(self, sid: str, user_id: str, discussion_id: str, *, replay: bool, last_seq: int = 0) -> None:
        """Start forwarding the discussion's events to this socket; returns once the subscription and the
        de-duplication baseline are in place (so a command sent afterwards cannot be missed)."""
        tasks = self.forwarders.setdefault(sid, {})
        if discussion_id in tasks and not tasks[discussion_id].done():
            return
        await self.sio.enter_room(sid, discussion_id)
        s = self.ctx.settings
        stream = EventStream(
            self.ctx.bus,
            discussion_id,
            self.ctx.history_reader(user_id, discussion_id),
            last_seq=last_seq,
            replay=replay,
            queue_size=s.sse_queue_size,
            heartbeat_s=s.sse_heartbeat_s,
            stop=self.ctx.draining,
        )
        await stream.__aenter__()
        try:
            await stream.prepare()
        except BaseException:
            await stream.__aexit__()
            raise

        async def run() -> None:
            try:
                async for item in stream.items():
                    if isinstance(item, Heartbeat):
                        continue
                    if isinstance(item, Overflow):
                        await self.error(sid, "SLOW_CONSUMER", "client too far behind; join again", discussion_id)
                        return
                    await self.sio.emit(item.event, event_payload(item), to=sid)
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("socket forwarder for %s failed", discussion_id)
            finally:
                await stream.__aexit__()

        tasks[discussion_id] = asyncio.create_task(run())

    # ---- handlers -------------------------------------------------------------------------------------
    def _register(self) -> None:
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        for event, model, action in CLIENT_EVENTS:
            self.sio.on(event, self._handler(event, model, action))

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        ctx = self.ctx
        token = connect_token(environ, auth)
        ip = str(environ.get("REMOTE_ADDR") or "unknown")
        try:
            principal = await ctx.authenticate(token, ip)
        except PlatformError as err:
            raise refused(err.code, err.message) from None
        if principal is None:
            raise refused(ErrorCode.UNAUTHORIZED, "invalid or missing API key")
        self._check_capacity(principal)
        self.principals[sid] = principal
        self.tokens[sid] = token
        self.handles[sid] = ctx.sessions.add(
            Session("socketio", principal.user_id, principal.key_id, lambda: self.end_revoked(sid))
        )
        self.ips[sid] = ip
        ctx.socket_connections += 1
        ctx.metrics.connections.inc()

    def _check_capacity(self, principal: Principal) -> None:
        """Refuse a connection beyond this copy's or this user's Socket.IO connection limit."""
        ctx = self.ctx
        limits = ctx.settings
        if ctx.socket_connections >= limits.max_socket_connections:
            raise refused(ErrorCode.SERVICE_UNAVAILABLE, "too many Socket.IO connections on this gateway copy")
        if ctx.sessions.count("socketio", principal.user_id) >= limits.max_socket_connections_per_user:
            raise refused(ErrorCode.RATE_LIMIT_EXCEEDED, "too many Socket.IO connections for this user")

    async def _disconnect(self, sid: str, *_: Any) -> None:
        ctx = self.ctx
        self.tokens.pop(sid, None)
        ctx.sessions.remove(self.handles.pop(sid, 0))
        if self.principals.pop(sid, None) is not None:
            ctx.socket_connections -= 1
            ctx.metrics.connections.dec()
        self.ips.pop(sid, None)
        for t in self.forwarders.pop(sid, {}).values():
            t.cancel()

    def _handler(
        self, event: str, model: type[BaseModel], action: str | None
    ) -> Callable[[str, Any], Awaitable[dict[str, Any]]]:
        async def run(sid: str, data: Any = None) -> dict[str, Any]:
            return await self._on_event(event, model, action, sid, data)

        return run

    async def _on_event(
        self, event: str, model: type[BaseModel], action: str | None, sid: str, data: Any
    ) -> dict[str, Any]:
        """One client event: authenticate again, validate, rate-limit, dispatch; every failure is answered
        with an `error` event and an error acknowledgement."""
        discussion_id = data.get("discussionId") if isinstance(data, dict) else None
        principal = await self.current_principal(sid)
        if principal is None:
            await self.error(sid, ErrorCode.UNAUTHORIZED, "not authenticated (API key revoked?)")
            await self.sio.disconnect(sid)
            return {"error": {"code": "UNAUTHORIZED", "message": "not authenticated"}}
        try:
            body = parse_event(event, model, data)
            await self.ctx.rate_limit(principal, self.ips.get(sid, "unknown"), action)
            view = await self.dispatch(sid, event, principal, body)
            return {"ok": True, "discussion": view.model_dump(mode="json")}
        except PlatformError as err:
            await self.error(sid, err.code, err.message, discussion_id if isinstance(discussion_id, str) else None)
            return {"error": {"code": err.code.value, "message": err.message}}
        except Exception:
            log.exception("socket event %s failed", event)
            await self.error(sid, ErrorCode.INTERNAL_ERROR, "internal error")
            return {"error": {"code": "INTERNAL_ERROR", "message": "internal error"}}

    async def dispatch(self, sid: str, event: str, p: Principal, body: BaseModel) -> DiscussionView:
        ctx = self.ctx
        if isinstance(body, StartDialogue):
            refs = await ctx.file_refs(p.user_id, body.files)
            view = await ctx.command(body.command(p.user_id, refs, key_id=p.key_id))
            await self.follow(sid, p.user_id, view.id, replay=True)
            return view
        assert isinstance(body, OnDiscussion)
        did = body.discussionId
        current = await ctx.query(DialogueQuery(kind="get", user_id=p.user_id, discussion_id=did), DiscussionView)
        if isinstance(body, JoinDiscussion):
            await self.follow(sid, p.user_id, did, replay=True, last_seq=body.lastEventId)
            return current
        await self.follow(sid, p.user_id, did, replay=False)
        cmd: Command
        if isinstance(body, SubmitAnswers):
            cmd = AnswersCommand(
                user_id=p.user_id, discussion_id=did, round_number=body.roundNumber, answers=body.answers
            )
        elif isinstance(body, UserInput):
            cmd = InputCommand(user_id=p.user_id, discussion_id=did, input=body.input)
        elif event == "generate-summary":
            cmd = SummaryCommand(user_id=p.user_id, discussion_id=did, round_number=body.roundNumber)
        elif event == "generate-questions":
            cmd = QuestionsCommand(user_id=p.user_id, discussion_id=did, round_number=body.roundNumber)
        elif event == "stop-dialogue":
            cmd = StopCommand(user_id=p.user_id, discussion_id=did)
        else:
            cmd = ProceedCommand(user_id=p.user_id, discussion_id=did)
        return await ctx.command(cmd)
