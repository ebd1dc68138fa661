from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from adp_common.bus import Bus, Delivery, RequestContext
from adp_common.schemas.llm import UsageRecord
from adp_common.telemetry import current_trace_id, setup_tracing, tracer


class Q(BaseModel):
    x: int = 0


class A(BaseModel):
    trace_id: str | None


async def test_trace_context_survives_request_reply_and_jetstream(bus: Bus, nats_url: str, prefix: str) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("test", extra=SimpleSpanProcessor(exporter))
    server = await Bus.connect(nats_url, prefix=prefix, name="svc")
    seen_in_consumer: list[str | None] = []
    try:

        async def handle(req: Q, ctx: RequestContext) -> A:
            return A(trace_id=current_trace_id())

        subject = bus.catalog.subject("svc", "trace")
        await server.serve(subject, handle, Q)
        await bus.ensure_streams(["USAGE"])

        async def consume(d: Delivery) -> None:
            seen_in_consumer.append(current_trace_id())

        consumer = await server.consume(server.catalog.stream_name("USAGE"), "trace-test", consume)
        with tracer().start_as_current_span("client request"):
            caller_trace = current_trace_id()
            reply = await bus.request(subject, Q(), response_model=A)
            await bus.publish_event(bus.catalog.usage_record, UsageRecord(request_id="t", provider="p", model="m"))
        for _ in range(100):
            if seen_in_consumer:
                break
            import asyncio

            await asyncio.sleep(0.05)
        await consumer.stop(grace=1)
    finally:
        await server.close(grace=1)
    assert caller_trace is not None
    assert reply.trace_id == caller_trace
    assert seen_in_consumer == [caller_trace]
    names = {s.name for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == caller_trace}
    assert {"client request", f"serve {subject}", "consume trace-test"} <= names
    assert trace.get_current_span().get_span_context().is_valid is False


def test_spans_are_not_recorded_until_something_receives_them_but_ids_propagate() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from adp_common.telemetry import RecordWhenExporting

    sampler = RecordWhenExporting()
    local = TracerProvider(sampler=sampler).get_tracer("t")
    with local.start_as_current_span("root") as root:
        assert not root.is_recording()
        assert root.get_span_context().is_valid  # a trace id for the logs and the NATS headers
        with local.start_as_current_span("child") as child:
            assert child.get_span_context().trace_id == root.get_span_context().trace_id
    sampler.recording = True
    with local.start_as_current_span("root") as root:
        assert root.is_recording()
