"""Discussions: create, list, read, act on, export, and follow (Server-Sent Events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, WithJsonSchema

from adp_common import sse
from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.dialogue import (
    MAX_FILES,
    MAX_PERSONAS,
    NO_NUL,
    AnswersCommand,
    Command,
    CreateCommand,
    DialogueQuery,
    DiscussionList,
    DiscussionView,
    ExportReply,
    FileRef,
    InputCommand,
    MaxRounds,
    PersonaName,
    PersonaSpec,
    ProceedCommand,
    QuestionsCommand,
    StopCommand,
    SummaryCommand,
    Topic,
    UserText,
)
from adp_gateway.auth import Principal
from adp_gateway.context import GatewayContext
from adp_gateway.deps import DISCUSSION_ID_PATTERN, ID_PATTERN, Ctx, DiscussionId, User, limited
from adp_gateway.errors import error_responses
from adp_gateway.events import (
    EventStream,
    EventStreamResponse,
    Heartbeat,
    Overflow,
    format_sse,
    format_sse_error,
    parse_last_event_id,
)
from adp_gateway.sessions import Session

router = APIRouter(tags=["discussions"], responses=error_responses(404, 409))


class CreateDiscussion(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    topic: Topic
    personas: list[PersonaSpec | PersonaName] | None = Field(
        default=None,
        max_length=MAX_PERSONAS,
        description="a name alone keeps a default persona's (Analyzer, Solver, Moderator) prompt and route",
    )
    max_rounds: MaxRounds | None = Field(default=None, validation_alias=AliasChoices("max_rounds", "maxRounds"))
    files: list[Annotated[str, Field(pattern=ID_PATTERN.pattern)]] = Field(
        default_factory=list, max_length=MAX_FILES, description="ids from POST /api/files"
    )
    auto: bool = False

    def command(self, user_id: str, files: list[FileRef], key_id: str | None = None) -> CreateCommand:
        """The create command (REST and Socket.IO alike); a persona given by name alone keeps its defaults.
        `key_id`: the caller's API key, which the discussion's LLM calls are charged to."""
        personas = None
        if self.personas is not None:
            personas = [PersonaSpec(name=x) if isinstance(x, str) else x for x in self.personas]
        return CreateCommand(
            user_id=user_id,
            key_id=key_id,
            topic=self.topic,
            personas=personas,
            max_rounds=self.max_rounds,
            auto=self.auto,
            files=files,
        )


AnswerText = Annotated[str, Field(max_length=100, json_schema_extra={"pattern": NO_NUL})]
_ANSWER_TEXT = {"type": "string", "maxLength": 100, "pattern": NO_NUL}
# Written out: a pattern on the keys would come out as patternProperties, leaving other keys unconstrained.
ANSWERS_SCHEMA = {
    "type": "object",
    "description": "question id -> the chosen option ids",
    "minProperties": 1,
    "maxProperties": 50,
    "propertyNames": _ANSWER_TEXT,
    "additionalProperties": {"type": "array", "items": _ANSWER_TEXT},
}


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
    answers: Annotated[
        dict[Annotated[str, Field(max_length=100)], list[AnswerText]], WithJsonSchema(ANSWERS_SCHEMA)
    ] = Field(min_length=1, max_length=50)


class InputBody(BaseModel):
    input: UserText


def did(discussion_id: str) -> str:
    if not DISCUSSION_ID_PATTERN.match(discussion_id):
        raise PlatformError(ErrorCode.INVALID_DISCUSSION_ID, "invalid discussion id")
    return discussion_id


def view(v: DiscussionView, status: int = 200) -> Response:
    # pydantic's own JSON encoder: one pass, not a dict tree and then json.dumps (a view holds every message)
    return Response(v.model_dump_json(), status_code=status, media_type="application/json")


async def act(ctx: GatewayContext, cmd: Command) -> Response:
    return view(await ctx.command(cmd))


@router.post("/api/discussions", status_code=201, response_model=DiscussionView)
async def create_discussion(
    body: CreateDiscussion, ctx: Ctx, p: Annotated[Principal, Depends(limited("start"))]
) -> Response:
    refs = await ctx.file_refs(p.user_id, body.files)
    return view(await ctx.command(body.command(p.user_id, refs, key_id=p.key_id)), 201)


@router.get("/api/discussions", response_model=DiscussionList)
async def list_discussions(ctx: Ctx, p: User) -> JSONResponse:
    result = await ctx.query(DialogueQuery(kind="list", user_id=p.user_id), DiscussionList)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/api/discussions/{discussion_id}", response_model=DiscussionView)
async def get_discussion(discussion_id: DiscussionId, ctx: Ctx, p: User) -> Response:
    q = DialogueQuery(kind="get", user_id=p.user_id, discussion_id=did(discussion_id))
    return view(await ctx.query(q, DiscussionView))


@router.post("/api/discussions/{discussion_id}/proceed", response_model=DiscussionView)
async def proceed(
    discussion_id: DiscussionId, ctx: Ctx, p: Annotated[Principal, Depends(limited("proceed"))]
) -> Response:
    return await act(ctx, ProceedCommand(user_id=p.user_id, discussion_id=did(discussion_id)))


@router.post("/api/discussions/{discussion_id}/answers", response_model=DiscussionView)
async def answers(
    discussion_id: DiscussionId, body: AnswersBody, ctx: Ctx, p: Annotated[Principal, Depends(limited("answers"))]
) -> Response:
    cmd = AnswersCommand(
        user_id=p.user_id, discussion_id=did(discussion_id), round_number=body.round_number, answers=body.answers
    )
    return await act(ctx, cmd)


@router.post("/api/discussions/{discussion_id}/input", response_model=DiscussionView)
async def user_input(
    discussion_id: DiscussionId, body: InputBody, ctx: Ctx, p: Annotated[Principal, Depends(limited("answers"))]
) -> Response:
    return await act(ctx, InputCommand(user_id=p.user_id, discussion_id=did(discussion_id), input=body.input))


@router.post("/api/discussions/{discussion_id}/questions", response_model=DiscussionView)
async def questions(
    discussion_id: DiscussionId,
    ctx: Ctx,
    p: Annotated[Principal, Depends(limited("questions"))],
    body: RoundBody | None = None,
) -> Response:
    rnd = body.round_number if body else None
    return await act(ctx, QuestionsCommand(user_id=p.user_id, discussion_id=did(discussion_id), round_number=rnd))


@router.post("/api/discussions/{discussion_id}/summary", response_model=DiscussionView)
async def summary(
    discussion_id: DiscussionId,
    ctx: Ctx,
    p: Annotated[Principal, Depends(limited("summary"))],
    body: RoundBody | None = None,
) -> Response:
    rnd = body.round_number if body else None
    return await act(ctx, SummaryCommand(user_id=p.user_id, discussion_id=did(discussion_id), round_number=rnd))


@router.post("/api/discussions/{discussion_id}/stop", response_model=DiscussionView)
async def stop(discussion_id: DiscussionId, ctx: Ctx, p: Annotated[Principal, Depends(limited(None))]) -> Response:
    return await act(ctx, StopCommand(user_id=p.user_id, discussion_id=did(discussion_id)))


@router.get(
    "/api/discussions/{discussion_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
)
async def export(
    discussion_id: DiscussionId, ctx: Ctx, p: User, format: Literal["json", "markdown"] = Query("json")
) -> Response:
    q = DialogueQuery(kind="export", user_id=p.user_id, discussion_id=did(discussion_id), format=format)
    reply = await ctx.query(q, ExportReply)
    ext, ctype = ("md", "text/markdown; charset=utf-8") if format == "markdown" else ("json", "application/json")
    return Response(
        reply.content,
        media_type=ctype,
        headers={"Content-Disposition": f'attachment; filename="discussion-{discussion_id}.{ext}"'},
    )


@router.get(
    "/api/discussions/{discussion_id}/events",
    response_class=StreamingResponse,  # for the OpenAPI document; the response is an EventStreamResponse
    responses={200: {"content": {"text/event-stream": {}}}},
    summary="Server-Sent Events; resume with Last-Event-ID (header) or ?lastEventId=",
)
async def events(
    discussion_id: DiscussionId,
    request: Request,
    ctx: Ctx,
    p: User,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    lastEventId: Annotated[str | None, Query(max_length=20)] = None,
) -> EventStreamResponse:
    s = ctx.settings
    try:
        last_seq = parse_last_event_id(last_event_id if last_event_id is not None else lastEventId)
    except ValueError:
        raise PlatformError(ErrorCode.VALIDATION_ERROR, "Last-Event-ID must be an integer from 0 to 2^63-1") from None
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
    return EventStreamResponse(
        _sse_frames(ctx, stream, discussion_id, p),
        stream.end,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse_frames(ctx: GatewayContext, stream: EventStream, discussion_id: str, p: Principal) -> AsyncIterator[str]:
    ctx.active_streams += 1
    ctx.metrics.streams.labels("sse").inc()
    revoked: list[bool] = []

    def end_revoked() -> None:
        revoked.append(True)
        stream.end()

    session = ctx.sessions.add(Session("sse", p.user_id, p.key_id, end_revoked))
    try:
        yield sse.retry(2000)
        # Events already waiting go out in one write: under load that is far fewer sends through
        # the ASGI stack and the socket, and the client gets them at the same moment anyway.
        batch: list[str] = []
        async for item in stream.items():
            if isinstance(item, Heartbeat):
                batch.append(sse.comment("ping"))
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
        if revoked:
            yield format_sse_error(discussion_id, "UNAUTHORIZED", "API key revoked or user disabled", stream.last_seq)
    finally:
        ctx.sessions.remove(session)
        ctx.active_streams -= 1
        ctx.metrics.streams.labels("sse").dec()
        await stream.__aexit__()
