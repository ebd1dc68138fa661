"""OpenTelemetry tracing set-up, W3C trace context over NATS headers, and Prometheus helpers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_provider: TracerProvider | None = None


class RecordWhenExporting(Sampler):
    """Spans are recorded only once something receives them (an exporter, a test's processor). Until then
    every span is non-recording: its trace and span ids are still made and propagated (NATS headers, the
    logs' trace_id), but no span object with attributes, events and processor calls is built — per message
    in every service, for spans nobody would see."""

    def __init__(self) -> None:
        self.recording = False

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent_state = get_current_span(parent_context).get_span_context().trace_state
        if self.recording:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent_state)
        return SamplingResult(Decision.DROP, None, parent_state)

    def get_description(self) -> str:
        return "RecordWhenExporting"


_sampler = RecordWhenExporting()


def setup_tracing(service_name: str, instance_id: str = "", *, extra: SpanProcessor | None = None) -> TracerProvider:
    """Install a tracer provider once per process. Exports over OTLP/HTTP only when
    OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise spans are not recorded (ids still propagate, see
    RecordWhenExporting). `extra` (tests) adds a processor and turns recording on."""
    global _provider
    if _provider is None:
        resource = Resource.create({"service.name": service_name, "service.instance.id": instance_id})
        _provider = TracerProvider(resource=resource, sampler=_sampler)
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _sampler.recording = True
        trace.set_tracer_provider(_provider)
    if extra is not None:
        _provider.add_span_processor(extra)
        _sampler.recording = True
    return _provider


def recording() -> bool:
    """Whether spans are recorded in this process (an exporter or a test's processor receives them)."""
    return _sampler.recording


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.force_flush(timeout_millis=2000)


_tracers: dict[str, trace.Tracer] = {}


def tracer(name: str = "adp") -> trace.Tracer:
    """A tracer per name, made once (get_tracer builds a new object on every call; this is per message).
    The API's proxy tracer follows a provider installed later, so caching before setup_tracing is fine."""
    t = _tracers.get(name)
    if t is None:
        t = _tracers[name] = trace.get_tracer(name)
    return t


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers with the current trace context (traceparent/tracestate) added."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class Metrics:
    """A per-service Prometheus registry (own registry so tests can run several services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
