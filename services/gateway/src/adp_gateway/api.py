"""The client contract (DESIGN.md section 5) on FastAPI: routes only; logic lives in the other modules."""

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Header, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.alerts import AckAlert, AlertEvent, AlertList, AlertQuery
from adp_common.schemas.cost import BudgetState, CostQuery, CostSummary, SetBudget
from adp_common.schemas.dialogue import (
    CountReply,
    DialogueCommand,
    DialogueQuery,
    DiscussionList,
    DiscussionView,
    ExportReply,
    PersonaSpec,
)
from adp_common.schemas.llm import CancelCalls, CompletionChunk, ModelList, ProviderStatusList
from adp_gateway import files as filecheck
from adp_gateway import openai_compat as oai
from adp_gateway.auth import Principal, hash_key, new_api_key, new_key_id, new_user_id
from adp_gateway.context import GatewayContext
from adp_gateway.errors import error_body, install_handlers
from adp_gateway.events import (
    EventStream,
    EventStreamResponse,
    Heartbeat,
    Overflow,
    format_sse,
    format_sse_error,
    parse_last_event_id,
)
from adp_gateway.store import StoredFile

STATIC_DIR = Path(__file__).parent / "static"
_DISCUSSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

_ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": desc,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for code, desc in [
        (400, "Invalid request (VALIDATION_ERROR, INVALID_DISCUSSION_ID)"),
        (401, "Missing or invalid API key (UNAUTHORIZED)"),
        (429, "Rate limit exceeded (RATE_LIMIT_EXCEEDED), see Retry-After"),
        (503, "A service the request needs is unavailable, or the gateway sheds load"),
    ]
}


# ---- request bodies -----------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    error: ErrorDetail


class CreateDiscussion(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    topic: str = Field(min_length=1, max_length=5000)
    personas: list[PersonaSpec | Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
        default=None, max_length=10
    )
    max_rounds: int | None = Field(default=None, ge=1, le=100, validation_alias=AliasChoices("max_rounds", "maxRounds"))
    files: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(
        default_factory=list, max_length=5, description="ids from POST /api/files"
    )
    auto: bool = False


class RoundBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    round_number: int | None = Field(
        default=None, ge=0, le=1000, validation_alias=AliasChoices("roundNumber", "round_number")
    )


class AnswersBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    round_number: int | None = Field(
        default=None, ge=0, le=1000, validation_alias=AliasChoices("roundNumber", "round_number")
    )
    answers: dict[Annotated[str, Field(max_length=100)], list[Annotated[str, Field(max_length=100)]]] = Field(
        max_length=50
    )


class InputBody(BaseModel):
    input: str = Field(min_length=1, max_length=5000)


class CreateUser(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    role: Literal["user", "admin"] = "user"


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    createdAt: datetime | None = None


class KeyOut(BaseModel):
    id: str
    key: str = Field(description="shown only once")
    userId: str
    createdAt: datetime | None = None


class RevokedOut(BaseModel):
    id: str
    revoked: bool


class FileOut(BaseModel):
    id: str
    name: str
    contentType: str
    size: int
    sha256: str
    textLength: int
    createdAt: datetime


# ---- app ----------------------------------------------------------------------------------------------------
def build_api(ctx: GatewayContext) -> FastAPI:
    s = ctx.settings
    app = FastAPI(
        title="AI Dialogue Platform gateway",
        version="0.1.0",
        description="Client API of the AI Dialogue Platform (see docs/gateway.md). "
        "Authenticate with `Authorization: Bearer <api key>`.",
        responses=ERROR_RESPONSES,
        # FastAPI's own OpenTelemetry: keep its HTTP request spans (the gateway's traces), but not its
        # per-dependency/serialization spans, metrics (Prometheus has ours) or logs (ours are JSON): they
        # cost CPU on every request and every SSE write.
        telemetry={"tracing": True, "operation_spans": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    install_handlers(app)
    if s.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=s.cors_origin_list,
            allow_credentials="*" not in s.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    bearer = HTTPBearer(auto_error=False, description="API key")

    # Register the envelope schema so the error responses above resolve.
    @app.get("/api/_error-format", include_in_schema=False, response_model=ErrorEnvelope)
    async def _error_format() -> ErrorEnvelope:  # pragma: no cover - documentation only
        return ErrorEnvelope(error=ErrorDetail(code="NOT_FOUND", message="example"))

    async def principal(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Principal:
        auth = f"Bearer {creds.credentials}" if creds is not None else request.headers.get("authorization")
        p = await ctx.authenticate_header(auth, x_api_key)
        request.state.principal = p
        return p

    def limited(action: str | None) -> Callable[..., Awaitable[Principal]]:
        async def dep(request: Request, p: Annotated[Principal, Depends(principal)]) -> Principal:
            await ctx.rate_limit(p, request.state.client_ip, action)
            return p

        return dep

    async def admin(request: Request, p: Annotated[Principal, Depends(limited(None))]) -> Principal:
        if not p.is_admin:
            raise PlatformError(ErrorCode.FORBIDDEN, "admin role required")
        return p

    User = Annotated[Principal, Depends(principal)]
    Admin = Annotated[Principal, Depends(admin)]

    def did(discussion_id: str) -> str:
        if not _DISCUSSION_ID.match(discussion_id):
            raise PlatformError(ErrorCode.INVALID_DISCUSSION_ID, "invalid discussion id")
        return discussion_id

    def view(v: DiscussionView, status: int = 200) -> Response:
        # pydantic's own JSON encoder: one pass, not a dict tree and then json.dumps (a view holds every message)
        return Response(v.model_dump_json(), status_code=status, media_type="application/json")

    # ---- health and metrics ------------------------------------------------------------------------------
    @app.get("/health", tags=["operations"], summary="This gateway copy's own health (runtime checks)")
    async def health() -> JSONResponse:
        reply = await ctx.rt.checks.run()
        return JSONResponse(reply.model_dump(mode="json"), status_code=200 if reply.status == "UP" else 503)

    @app.get("/ready", tags=["operations"])
    async def ready() -> JSONResponse:
        ok = ctx.rt.checks.ready and not ctx.draining.is_set()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/live", tags=["operations"], summary="Liveness: the process answers HTTP")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        body, ctype = ctx.rt.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/api/health", tags=["operations"], summary="Platform health: 200 when every required component is UP")
    async def api_health() -> JSONResponse:
        ok, body = await ctx.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    # ---- discussions -----------------------------------------------------------------------------------
    @app.post("/api/discussions", status_code=201, tags=["discussions"], response_model=DiscussionView)
    async def create_discussion(body: CreateDiscussion, p: Annotated[Principal, Depends(limited("start"))]) -> Response:
        refs = await ctx.file_refs(p.user_id, body.files)
        personas = None
        if body.personas is not None:
            personas = [PersonaSpec(name=x) if isinstance(x, str) else x for x in body.personas]
        cmd = DialogueCommand(
            action="create",
            user_id=p.user_id,
            topic=body.topic,
            personas=personas,
            max_rounds=body.max_rounds,
            auto=body.auto,
            files=refs,
        )
        return view(await ctx.command(cmd), 201)

    @app.get("/api/discussions", tags=["discussions"], response_model=DiscussionList)
    async def list_discussions(p: User) -> JSONResponse:
        result = await ctx.query(DialogueQuery(kind="list", user_id=p.user_id), DiscussionList)
        return JSONResponse(result.model_dump(mode="json"))

    @app.get("/api/discussions/{discussion_id}", tags=["discussions"], response_model=DiscussionView)
    async def get_discussion(discussion_id: str, p: User) -> Response:
        q = DialogueQuery(kind="get", user_id=p.user_id, discussion_id=did(discussion_id))
        return view(await ctx.query(q, DiscussionView))

    async def act(p: Principal, discussion_id: str, action: str, **kw: Any) -> Response:
        cmd = DialogueCommand(action=action, user_id=p.user_id, discussion_id=did(discussion_id), **kw)  # type: ignore[arg-type]
        return view(await ctx.command(cmd))

    @app.post("/api/discussions/{discussion_id}/proceed", tags=["discussions"], response_model=DiscussionView)
    async def proceed(discussion_id: str, p: Annotated[Principal, Depends(limited("proceed"))]) -> Response:
        return await act(p, discussion_id, "proceed")

    @app.post("/api/discussions/{discussion_id}/answers", tags=["discussions"], response_model=DiscussionView)
    async def answers(
        discussion_id: str, body: AnswersBody, p: Annotated[Principal, Depends(limited("answers"))]
    ) -> Response:
        return await act(p, discussion_id, "answers", round_number=body.round_number, answers=body.answers)

    @app.post("/api/discussions/{discussion_id}/input", tags=["discussions"], response_model=DiscussionView)
    async def user_input(
        discussion_id: str, body: InputBody, p: Annotated[Principal, Depends(limited("answers"))]
    ) -> Response:
        return await act(p, discussion_id, "input", input=body.input)

    @app.post("/api/discussions/{discussion_id}/questions", tags=["discussions"], response_model=DiscussionView)
    async def questions(
        discussion_id: str,
        p: Annotated[Principal, Depends(limited("questions"))],
        body: RoundBody | None = None,
    ) -> Response:
        return await act(p, discussion_id, "questions", round_number=body.round_number if body else None)

    @app.post("/api/discussions/{discussion_id}/summary", tags=["discussions"], response_model=DiscussionView)
    async def summary(
        discussion_id: str,
        p: Annotated[Principal, Depends(limited("summary"))],
        body: RoundBody | None = None,
    ) -> Response:
        return await act(p, discussion_id, "summary", round_number=body.round_number if body else None)

    @app.post("/api/discussions/{discussion_id}/stop", tags=["discussions"], response_model=DiscussionView)
    async def stop(discussion_id: str, p: Annotated[Principal, Depends(limited(None))]) -> Response:
        return await act(p, discussion_id, "stop")

    @app.get(
        "/api/discussions/{discussion_id}/export",
        tags=["discussions"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
    )
    async def export(discussion_id: str, p: User, format: Literal["json", "markdown"] = Query("json")) -> Response:
        q = DialogueQuery(kind="export", user_id=p.user_id, discussion_id=did(discussion_id), format=format)
        reply = await ctx.query(q, ExportReply)
        ext, ctype = ("md", "text/markdown; charset=utf-8") if format == "markdown" else ("json", "application/json")
        return Response(
            reply.content,
            media_type=ctype,
            headers={"Content-Disposition": f'attachment; filename="discussion-{discussion_id}.{ext}"'},
        )

    @app.get(
        "/api/discussions/{discussion_id}/events",
        tags=["discussions"],
        response_class=StreamingResponse,  # for the OpenAPI document; the response is an EventStreamResponse
        responses={200: {"content": {"text/event-stream": {}}}},
        summary="Server-Sent Events; resume with Last-Event-ID (header) or ?lastEventId=",
    )
    async def events(
        discussion_id: str,
        request: Request,
        p: User,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
        lastEventId: Annotated[str | None, Query(max_length=20)] = None,
    ) -> EventStreamResponse:
        try:
            last_seq = parse_last_event_id(last_event_id if last_event_id is not None else lastEventId)
        except ValueError:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "Last-Event-ID must be a non-negative integer") from None
        did(discussion_id)
        if ctx.active_streams >= s.max_streams:
            raise PlatformError(ErrorCode.SERVICE_UNAVAILABLE, "too many open streams on this gateway copy")
        stream = EventStream(
            ctx.bus,
            discussion_id,
            ctx.history_reader(p.user_id, discussion_id),
            last_seq=last_seq,
            queue_size=s.sse_queue_size,
            heartbeat_s=s.sse_heartbeat_s,
            stop=ctx.draining,
        )
        await stream.__aenter__()
        try:
            # The history (read after subscribing) is also the ownership check: a 404 before the stream starts.
            await stream.prepare()
        except BaseException:
            await stream.__aexit__()
            raise

        async def gen() -> AsyncIterator[str]:
            ctx.active_streams += 1
            ctx.metrics.streams.labels("sse").inc()
            try:
                yield "retry: 2000\n\n"
                # Events already waiting go out in one write: under load that is far fewer sends through
                # the ASGI stack and the socket, and the client gets them at the same moment anyway.
                batch: list[str] = []
                async for item in stream.items():
                    if isinstance(item, Heartbeat):
                        batch.append(": ping\n\n")
                    elif isinstance(item, Overflow):
                        batch.append(
                            format_sse_error(
                                discussion_id,
                                "SLOW_CONSUMER",
                                "client too far behind; reconnect with Last-Event-ID",
                                item.last_seq,
                            )
                        )
                        yield "".join(batch)
                        return
                    else:
                        batch.append(format_sse(item))
                    if not stream.has_more():
                        yield "".join(batch)
                        batch.clear()
                if batch:
                    yield "".join(batch)
            finally:
                ctx.active_streams -= 1
                ctx.metrics.streams.labels("sse").dec()
                await stream.__aexit__()

        return EventStreamResponse(gen(), stream.end, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- files ------------------------------------------------------------------------------------------
    @app.post("/api/files", status_code=201, tags=["files"], response_model=FileOut)
    async def upload(
        p: Annotated[Principal, Depends(limited(None))], file: Annotated[UploadFile, File()]
    ) -> JSONResponse:
        data = await file.read(s.max_file_bytes + 1)
        ctype = filecheck.check_upload(data, s.max_file_bytes)
        text = await filecheck.extract_text(data, ctype, ctx.pdf)
        stored = StoredFile(
            id="file_" + uuid.uuid4().hex[:20],
            user_id=p.user_id,
            name=filecheck.safe_filename(file.filename),
            content_type=ctype,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            text=text.replace("\x00", ""),
        )
        await ctx.store.save_file(stored)
        out = FileOut(
            id=stored.id,
            name=stored.name,
            contentType=ctype,
            size=stored.size,
            sha256=stored.sha256,
            textLength=len(stored.text),
            createdAt=datetime.now(UTC),
        )
        return JSONResponse(out.model_dump(mode="json"), status_code=201)

    # ---- OpenAI-compatible API ---------------------------------------------------------------------------
    @app.get("/v1/models", tags=["openai"])
    async def models(p: User) -> JSONResponse:
        result = await ctx.request(ctx.bus.catalog.llm_models, None, ModelList)  # type: ignore[arg-type]
        return JSONResponse(oai.models_response(result))

    @app.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat_completions(
        body: oai.ChatCompletionRequest, p: Annotated[Principal, Depends(limited(None))]
    ) -> Response:
        req = oai.to_completion_request(body, user_id=p.user_id, timeout_s=s.completion_timeout_s)
        if not body.stream:
            result = await ctx.llm.complete(req)
            return JSONResponse(oai.completion_response(result, model=body.model))
        return await _stream_completion(ctx, req, body)

    # ---- operations ------------------------------------------------------------------------------------
    @app.get("/api/costs", tags=["operations"], response_model=CostSummary)
    async def costs(
        p: User,
        userId: Annotated[str | None, Query(max_length=80)] = None,
        startDate: date | None = None,
        endDate: date | None = None,
    ) -> JSONResponse:
        if not p.is_admin:
            if userId is not None and userId != p.user_id:
                raise PlatformError(ErrorCode.FORBIDDEN, "non-admins can only see their own costs")
            userId = p.user_id
        if startDate and endDate and startDate > endDate:
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "startDate is after endDate")
        q = CostQuery(kind="summary", user_id=userId, start_date=startDate, end_date=endDate)
        result = await ctx.request(ctx.bus.catalog.cost_query, q, CostSummary)
        return JSONResponse(result.model_dump(mode="json"))

    @app.get("/api/alerts", tags=["operations"], response_model=AlertList)
    async def alerts(
        p: User,
        kind: Literal["active", "history"] = "history",
        severity: Literal["info", "warning", "critical"] | None = None,
        state: Literal["firing", "resolved"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> JSONResponse:
        q = AlertQuery(kind=kind, severity=severity, state=state, limit=limit)
        result = await ctx.request(ctx.bus.catalog.alerts_query, q, AlertList)
        return JSONResponse(result.model_dump(mode="json"))

    @app.post("/api/alerts/{alert_id}/ack", tags=["operations"], response_model=AlertEvent)
    async def ack(alert_id: str, p: Admin) -> JSONResponse:
        if not _ID.match(alert_id):
            raise PlatformError(ErrorCode.VALIDATION_ERROR, "invalid alert id")
        result = await ctx.request(ctx.bus.catalog.alerts_ack, AckAlert(alert_id=alert_id, by=p.user_id), AlertEvent)
        return JSONResponse(result.model_dump(mode="json"))

    @app.get("/api/monitoring/dashboard", tags=["operations"])
    async def dashboard(p: User) -> JSONResponse:
        return JSONResponse(await _dashboard(ctx))

    # ---- admin ------------------------------------------------------------------------------------------
    @app.post("/api/admin/users", status_code=201, tags=["admin"], response_model=UserOut)
    async def create_user(body: CreateUser, p: Admin) -> JSONResponse:
        row = await ctx.store.create_user(new_user_id(), body.name, body.role)
        out = UserOut(id=str(row["id"]), name=str(row["name"]), role=str(row["role"]), createdAt=row["created_at"])  # type: ignore[arg-type]
        return JSONResponse(out.model_dump(mode="json"), status_code=201)

    @app.post("/api/admin/users/{user_id}/keys", status_code=201, tags=["admin"], response_model=KeyOut)
    async def create_key(user_id: str, p: Admin) -> JSONResponse:
        if not _ID.match(user_id) or not await ctx.store.user_exists(user_id):
            raise PlatformError(ErrorCode.NOT_FOUND, "no such user")
        key = new_api_key()
        row = await ctx.store.create_key(new_key_id(), user_id, hash_key(key), key[:8])
        out = KeyOut(id=str(row["id"]), key=key, userId=user_id, createdAt=row["created_at"])  # type: ignore[arg-type]
        return JSONResponse(out.model_dump(mode="json"), status_code=201)

    @app.delete("/api/admin/keys/{key_id}", tags=["admin"], response_model=RevokedOut)
    async def revoke_key(key_id: str, p: Admin) -> JSONResponse:
        if not _ID.match(key_id) or not await ctx.store.revoke_key(key_id):
            raise PlatformError(ErrorCode.NOT_FOUND, "no such key")
        ctx.cache.drop_key_id(key_id)
        await ctx.broadcast_revocation(key_id)
        return JSONResponse(RevokedOut(id=key_id, revoked=True).model_dump())

    @app.put("/api/admin/budget", tags=["admin"], response_model=BudgetState)
    async def set_budget(body: SetBudget, p: Admin) -> JSONResponse:
        result = await ctx.request(ctx.bus.catalog.cost_budget_set, body, BudgetState)
        return JSONResponse(result.model_dump(mode="json"))

    if (STATIC_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app


async def _stream_completion(ctx: GatewayContext, req: Any, body: oai.ChatCompletionRequest) -> Response:
    """Start the call; answer with a plain error if it fails before the first token, else stream chunks."""
    queue: asyncio.Queue[CompletionChunk] = asyncio.Queue()

    async def on_chunk(c: CompletionChunk) -> None:
        queue.put_nowait(c)

    task = asyncio.create_task(ctx.llm.complete(req, on_chunk=on_chunk))
    first = asyncio.ensure_future(queue.get())
    await asyncio.wait({first, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not first.done() and task.exception() is not None:
        first.cancel()
        exc = task.exception()
        if isinstance(exc, PlatformError):
            raise exc
        raise PlatformError(ErrorCode.LLM_PROVIDER_ERROR, "completion failed")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    enc = oai.StreamEncoder(req.request_id, model=body.model, include_usage=include_usage)

    async def gen() -> AsyncIterator[bytes]:
        ctx.metrics.streams.labels("openai").inc()
        pending: asyncio.Future[CompletionChunk] | None = first
        try:
            yield enc.start()
            while True:
                get = pending if pending is not None else asyncio.ensure_future(queue.get())
                pending = None
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield enc.chunk(get.result())
                    continue
                get.cancel()
                if task.cancelled():  # the client went away (EventStreamResponse cancelled the call here)
                    # and the router stops it too: the provider stops generating, and only what streamed is charged
                    cancel = CancelCalls(request_id=req.request_id, reason="client disconnected")
                    await ctx.bus.notify(ctx.bus.catalog.llm_cancel, cancel)
                    return
                while not queue.empty():
                    yield enc.chunk(queue.get_nowait())
                try:
                    result = task.result()
                except PlatformError as err:
                    yield enc.error(err.code.value, err.message)
                    return
                except Exception:
                    yield enc.error(ErrorCode.INTERNAL_ERROR.value, "completion failed")
                    return
                yield enc.finish(result)
                return
        finally:
            ctx.metrics.streams.labels("openai").dec()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # a client that goes away cancels the call, here and (CancelCalls by request id) at the router
    return EventStreamResponse(gen(), task.cancel, headers={"Cache-Control": "no-cache"})


async def _dashboard(ctx: GatewayContext) -> dict[str, Any]:
    """Everything the dashboard shows, gathered concurrently; a part whose service is down is null + an error."""
    cat = ctx.bus.catalog
    t = ctx.settings.health_timeout_s + 1
    errors: dict[str, str] = {}

    async def part(name: str, coro: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(coro, t)
        except PlatformError as err:
            errors[name] = f"{err.code.value}: {err.message}"[:200]
        except Exception as err:
            errors[name] = (str(err) or type(err).__name__)[:200]
        return None

    health, active, providers, alerts, costs = await asyncio.gather(
        part("health", ctx.health()),
        part("activeDiscussions", ctx.query(DialogueQuery(kind="active_count"), CountReply)),
        part("providers", ctx.request(cat.llm_providers, None, ProviderStatusList, timeout=t)),  # type: ignore[arg-type]
        part("alerts", ctx.request(cat.alerts_query, AlertQuery(kind="active"), AlertList, timeout=t)),
        part("costs", ctx.request(cat.cost_query, CostQuery(kind="summary"), CostSummary, timeout=t)),
    )
    m = ctx.metrics
    provider_rows = [
        {
            "provider": pr.provider,
            "available": pr.available,
            "successRate": pr.success_rate,
            "requests": pr.requests,
            "latencyP50Ms": pr.latency_p50_ms,
            "latencyP95Ms": pr.latency_p95_ms,
            "simulated": pr.simulated,
        }
        for pr in (providers.providers if providers else [])
    ]
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "health": health[1] if health else None,
        "metrics": {
            "scope": "this gateway copy since start",
            "requests": m.total,
            "errors": m.total_errors,
            "errorRate": round(m.total_errors / m.total, 4) if m.total else 0.0,
            "activeDiscussions": active.count if active else None,
            "connections": {"sse": ctx.active_streams, "socketio": ctx.socket_connections},
        },
        "providers": provider_rows if providers else None,
        "circuitBreakers": [{"provider": pr.provider, "state": pr.breaker} for pr in providers.providers]
        if providers
        else None,
        "alerts": [a.model_dump(mode="json") for a in alerts.alerts] if alerts else None,
        "costs": costs.model_dump(mode="json") if costs else None,
        "errors": errors,
    }


__all__ = ["build_api", "error_body"]
