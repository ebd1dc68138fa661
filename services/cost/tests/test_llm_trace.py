"""One LLM call is one trace from the caller to the ledger: the router's span follows the OpenTelemetry GenAI
conventions and the cost service's charge of its usage record joins the same trace."""

from __future__ import annotations

import json

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adp_common.llm_client import LLMClient
from adp_common.schemas.llm import ChatMessage, CompletionRequest
from adp_common.telemetry import current_trace_id, setup_tracing, tracer
from adp_router.app import RouterApp
from adp_router.settings import RouterSettings
from adp_testing.inproc import running_service

from .conftest import CostEnv, run_cost


async def test_llm_call_span_and_its_charge_share_the_trace(cost_env: CostEnv, nats_url: str, prefix: str) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("test", extra=SimpleSpanProcessor(exporter))
    settings = RouterSettings(
        nats_url=nats_url,
        subject_prefix=prefix,
        router_providers=json.dumps({"simulated-b": {"kind": "simulated"}}),
        router_routes=json.dumps({"default": ["simulated/simulated/default", "simulated-b/default"]}),
        simulated_ttft_ms=0,
        simulated_tokens_per_s=100000,
        heartbeat_interval_s=60,
    )
    prices = json.dumps({"providers": {"simulated": {"input": 1000, "output": 2000}}})
    async with (
        run_cost(cost_env, cost_prices=prices),
        running_service("llm-router", settings, RouterApp(settings), use_database=False),
    ):
        with tracer().start_as_current_span("discussion turn"):
            trace_id = current_trace_id()
            req = CompletionRequest(
                messages=[ChatMessage(role="user", content="Say something useful")], max_tokens=200, user_id="u1"
            )
            result = await LLMClient(cost_env.bus).complete(req)
        await cost_env.wait_ledger(1)
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    by_name = {s.name: s for s in spans}
    call = by_name["chat simulated/default"]
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "simulated/default"
    assert attrs["gen_ai.provider.name"] == "simulated"
    assert attrs["gen_ai.usage.input_tokens"] == result.usage.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == result.usage.output_tokens > 0
    assert attrs["gen_ai.request.max_tokens"] == 200
    assert attrs["adp.llm.attempts"] == 1 and attrs["adp.llm.fallback"] is False
    charge = by_name["cost.charge"]
    cattrs = dict(charge.attributes or {})
    assert cattrs["adp.llm.request_id"] == req.request_id
    expected = (result.usage.input_tokens * 1000 + result.usage.output_tokens * 2000) / 1_000_000
    assert float(cattrs["adp.cost.usd"]) == expected > 0
    assert charge.parent is not None and charge.parent.span_id == call.context.span_id
