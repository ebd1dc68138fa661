"""OpenTelemetry tracing set-up, W3C trace context over NATS headers, and Prometheus helpers."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

_provider: TracerProvider | None = None


def setup_tracing(service_name: str, instance_id: str = "", *, extra: SpanProcessor | None = None) -> TracerProvider:
    """Install a tracer provider once per process. Exports over OTLP/HTTP only when
    OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise spans are created (ids propagate) but not exported."""
    global _provider
    if _provider is None:
        resource = Resource.create({"service.name": service_name, "service.instance.id": instance_id})
        _provider = TracerProvider(resource=resource)
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    if extra is not None:
        _provider.add_span_processor(extra)
    return _provider


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
