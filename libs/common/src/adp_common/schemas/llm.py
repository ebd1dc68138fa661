"""llm-router messages: completion requests, streamed chunks, results, usage records, provider state."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from adp_common.envelope import event_type, new_id, utcnow

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    role: Role
    content: str


class CompletionRequest(BaseModel):
    """Request on `<prefix>.llm.complete`. The reply is a CompletionResult (or an error reply).

    When `stream` is true the router publishes CompletionChunk messages on `Catalog.llm_stream(request_id)`
    (core NATS) as tokens arrive; the caller subscribes to it before sending the request.
    """

    request_id: str = Field(default_factory=new_id, description="Idempotency key; also the usage record id")
    messages: list[ChatMessage] = Field(min_length=1)
    route: str = Field(default="default", description="Persona route ('analyzer'), model name, or 'provider/model'")
    strict_route: bool = Field(
        default=False,
        description="Answer MODEL_NOT_FOUND when `route` names no route, model or 'provider/model', instead of "
        "serving it by the default route",
    )
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    user_id: str | None = None
    key_id: str | None = Field(default=None, description="the API key the call is charged to (per-key spend, budget)")
    discussion_id: str | None = None
    persona: str | None = None
    timeout_s: float = Field(default=120.0, gt=0, le=600, description="Deadline for the whole call")
    fallback_after_tokens: bool = Field(
        default=False, description="Allow falling to the next provider after tokens were streamed"
    )
    task: str | None = Field(
        default=None,
        description="What the call is for: turn | continue | summary | questions | resolution | final | chat. "
        "Lets the simulated provider answer in kind (e.g. JSON for questions).",
    )
    round: int | None = Field(default=None, ge=0, description="Discussion round of a dialogue call")
    relay_subject: str | None = Field(
        default=None,
        max_length=300,
        description="Streaming calls: publish the chunks here (core NATS) instead of to the caller, so they reach "
        "their final listeners in one hop (the dialogue service relays persona turns straight to the discussion).",
    )
    relay_template: dict[str, Any] | None = Field(
        default=None,
        description="JSON object published per chunk on relay_subject; the router sets data.chunk to the text "
        "(and data.restart=true on the first chunk of an answer that restarts).",
    )
    relay_restart: bool = Field(
        default=False, description="Set by the client when re-sending a call whose relayed text may be partial"
    )
    call_key: str | None = Field(
        default=None,
        max_length=300,
        description="Logical id of the call, the same every time its caller makes it again (a dialogue step "
        "redelivered after a crash): the router replays a finished call's stored result for it, or joins the "
        "call still running for it, instead of calling the provider again. The request_id stays per attempt. "
        "Without one, LLMClient uses the request_id: a request it re-sends to another router copy is the same call.",
    )
    fresh: bool = Field(
        default=False,
        description="The caller makes this logical call for the first time (a step's first delivery, a request's "
        "first send): the router claims it while the provider request starts instead of before, sparing the "
        "time to first token a round trip. Should an earlier attempt exist after all, the new request is "
        "cancelled and the earlier one's result used.",
    )
    claim_after_s: float | None = Field(
        default=None,
        gt=0,
        description="For a fresh call whose caller sends it again only after a longer silence (a request with no "
        "logical id of its own): the router claims the call only once it has run this long, and stores the "
        "result of a shorter one without a claim, sparing short calls a bucket write.",
    )


class CompletionChunk(BaseModel):
    request_id: str
    seq: int
    delta: str = ""
    # Set when the answer restarts from scratch (another provider, or another router copy after the first
    # one was lost): the receiver discards the partial text it has.
    restart: bool = False
    provider: str | None = None
    model: str | None = Field(default=None, description="The model answering (as in CompletionResult.model)")
    # Liveness signal the router sends every few seconds while a call runs (no text; seq -1).
    keepalive: bool = False


class CancelCalls(BaseModel):
    """Stop in-flight calls: every call of a discussion (e.g. it was stopped), or one call by its request id
    (e.g. an OpenAI-compatible client hung up). Sent to all router copies; give at least one of the two."""

    discussion_id: str | None = None
    request_id: str | None = None
    reason: str = "discussion stopped"


class CallOwnerQuery(BaseModel):
    """Asked of the router copy that claimed a logical call (`Catalog.llm_call_owner`): is it still running?"""

    call_key: str


class CallOwnerReply(BaseModel):
    running: bool


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False


class CompletionResult(BaseModel):
    request_id: str
    text: str
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    provider: str
    model: str
    simulated: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 1


@event_type("usage.recorded")
class UsageRecord(BaseModel):
    """One per LLM call, success or failure, published once (Nats-Msg-Id = request_id) on USAGE."""

    request_id: str
    user_id: str | None = None
    key_id: str | None = None
    discussion_id: str | None = None
    persona: str | None = None
    route: str | None = None
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: Literal["ok", "error"] = "ok"
    error_code: str | None = None
    time: datetime = Field(default_factory=utcnow)


class ModelInfo(BaseModel):
    id: str
    provider: str
    simulated: bool = False
    owned_by: str = ""
    kind: Literal["model", "route"] = Field(
        default="model", description="a provider's model ('provider/model'), or a route name served by a chain"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


BreakerStateName = Literal["closed", "open", "half_open"]


class BreakerState(BaseModel):
    """Value stored per provider in the breakers KV bucket, shared by all router copies."""

    provider: str
    state: BreakerStateName = "closed"
    failures: list[float] = Field(default_factory=list, description="epoch seconds of recent failures")
    successes_in_half_open: int = 0
    opened_at: float | None = None
    updated_at: float = 0.0


class ProviderStatus(BaseModel):
    provider: str
    available: bool
    breaker: BreakerStateName = "closed"
    success_rate: float | None = None
    requests: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    simulated: bool = False
    models: list[str] = Field(default_factory=list)


class ProviderStatusList(BaseModel):
    providers: list[ProviderStatus]


class StoredCall(BaseModel):
    """Value per logical call (`CompletionRequest.call_key`) in the llm-results KV bucket: claimed by the router
    copy running it, then its result, replayed to the same logical call until the bucket's TTL drops it."""

    call_key: str
    state: Literal["running", "done"]
    owner: str = Field(description="instance id of the router copy that runs or ran the call")
    result: CompletionResult | None = None
