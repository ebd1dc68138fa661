"""The span of one LLM call, named and attributed after the OpenTelemetry GenAI semantic conventions
(`gen_ai.*`), plus the platform's own `adp.llm.*` attributes (route, attempts, fallback). Its parent is the
bus request's span, so a discussion turn's call sits in the trace that started at the gateway; the cost
service's `cost.charge` span for the same request id joins that trace too."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from adp_common.schemas.llm import CompletionRequest, CompletionResult
from adp_common.telemetry import tracer
from adp_router.config import RouteEntry

OPERATION = "chat"


def span_name(chain: list[RouteEntry], route: str) -> str:
    return f"{OPERATION} {chain[0].model if chain else route}"


def start_call_span(req: CompletionRequest) -> Span:
    """Started before the chain is known (the budget gate may refuse first); renamed once it is."""
    return tracer("adp.router").start_span(f"{OPERATION} {req.route}", kind=SpanKind.CLIENT)


def request_attributes(req: CompletionRequest, chain: list[RouteEntry]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.request.model": chain[0].model if chain else req.route,
        "gen_ai.request.stream": req.stream,
        "adp.llm.route": req.route,
        "adp.llm.request_id": req.request_id,
        "adp.llm.chain": [str(e) for e in chain],
    }
    if req.max_tokens is not None:
        attrs["gen_ai.request.max_tokens"] = req.max_tokens
    if req.temperature is not None:
        attrs["gen_ai.request.temperature"] = req.temperature
    if req.persona:
        attrs["adp.llm.persona"] = req.persona
    if req.discussion_id:
        attrs["adp.discussion_id"] = req.discussion_id
    return attrs


def outcome_attributes(
    provider: str, model: str, input_tokens: int, output_tokens: int, attempts: int, chain: list[RouteEntry]
) -> dict[str, Any]:
    return {
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "adp.llm.provider": provider,
        "adp.llm.attempts": attempts,
        "adp.llm.fallback": bool(chain) and provider != chain[0].provider,
    }


def finish_ok(span: Span, req: CompletionRequest, chain: list[RouteEntry], result: CompletionResult) -> None:
    if span.is_recording():
        span.update_name(span_name(chain, req.route))
        span.set_attributes(request_attributes(req, chain))
        span.set_attributes(
            outcome_attributes(
                result.provider,
                result.model,
                result.usage.input_tokens,
                result.usage.output_tokens,
                result.attempts,
                chain,
            )
        )
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        span.set_attribute("adp.llm.simulated", result.simulated)
        if result.ttft_ms is not None:
            span.set_attribute("adp.llm.ttft_ms", result.ttft_ms)
    span.end()


def finish_error(
    span: Span,
    req: CompletionRequest,
    chain: list[RouteEntry],
    code: str,
    message: str,
    outcome: dict[str, Any] | None,
) -> None:
    if span.is_recording():
        span.update_name(span_name(chain, req.route))
        span.set_attributes(request_attributes(req, chain))
        if outcome:
            span.set_attributes(outcome)
        span.set_attribute("error.type", code)
        span.set_status(Status(StatusCode.ERROR, message[:200]))
    span.end()


def use_span(span: Span) -> Any:
    """The call's span as the current one (provider HTTP calls and the usage record inherit it)."""
    return trace.use_span(span, end_on_exit=False)
