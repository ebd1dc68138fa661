"""Prometheus metrics, the request-stats window published for the alerts service, and the ASGI middleware
that gives every request an id, sheds load, limits body size, logs one access line and records metrics."""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adp_common.errors import ErrorCode
from adp_common.logging import correlation_id, log_slow
from adp_common.schemas.ops import RequestStats
from adp_gateway.bodylimit import UPLOAD_PATHS, BodyReader, BodyRefused, check_headers, has_body
from adp_gateway.errors import code_for_status, error_body
from adp_gateway.metrics_report import RecentRequests
from adp_gateway.security_headers import security_headers

access_log = logging.getLogger("adp.gateway.access")
log = logging.getLogger("adp.gateway")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
EXEMPT_PATHS = ("/health", "/ready", "/live", "/metrics")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "adp_gateway_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "adp_gateway_http_request_duration_seconds",
            "HTTP request latency (until the response is complete; streams excluded)",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.errors = Counter("adp_gateway_http_errors", "Error responses", ["route", "code"], registry=registry)
        self.inflight = Gauge("adp_gateway_inflight_requests", "Requests in flight", registry=registry)
        self.streams = Gauge("adp_gateway_active_streams", "Open streams", ["kind"], registry=registry)
        self.connections = Gauge("adp_gateway_socketio_connections", "Connected Socket.IO clients", registry=registry)
        self.shed = Counter("adp_gateway_shed_requests", "Requests refused by load shedding", registry=registry)
        self.rate_limited = Counter(
            "adp_gateway_rate_limited", "Requests refused by rate limits", ["bucket"], registry=registry
        )
        self.total = 0
        self.total_errors = 0
        self.inflight_now = 0  # what the gauge shows, readable without the registry
        self.recent = RecentRequests()  # the last minute's outcomes: GET /api/metrics and the dashboard


@dataclass
class StatsWindow:
    """Request outcomes since the last publication (latency sample bounded by reservoir sampling)."""

    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    timed: int = 0  # requests whose latency was offered to the sample
    sample_size: int = 500
    error_codes: dict[str, int] = field(default_factory=dict)

    def add_code(self, code: str) -> None:
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    def add(self, status: int, latency_ms: float | None) -> None:
        """One finished request; `latency_ms` None for an event stream, whose duration is how long the
        client stayed, not how fast the gateway answered (it would read as a latency alert)."""
        self.requests += 1
        if status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1
        if latency_ms is None:
            return
        self.timed += 1
        if len(self.latencies) < self.sample_size:
            self.latencies.append(latency_ms)
        else:
            i = random.randrange(self.timed)
            if i < self.sample_size:
                self.latencies[i] = latency_ms

    def to_stats(self, service: str, instance: str) -> RequestStats:
        lat = sorted(self.latencies)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None
        return RequestStats(
            service=service,
            instance=instance,
            window_start=self.start,
            window_s=round(time.monotonic() - self.started, 3),
            requests=self.requests,
            errors=self.errors,
            client_errors=self.client_errors,
            latencies_ms=[round(x, 2) for x in lat],
            latency_p95_ms=round(p95, 2) if p95 is not None else None,
            error_codes=dict(self.error_codes),
        )


def error_code_of(status: int, body: bytes) -> str:
    """The error envelope's code of an error response (first body chunk), else the code its status means:
    the error metric is labelled by platform error codes, never by bare HTTP statuses."""
    try:
        code = json.loads(body[:4096])["error"]["code"]
        return ErrorCode(code).value
    except (ValueError, KeyError, TypeError):
        return code_for_status(status).value


def client_ip(scope: Scope, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        for k, v in scope.get("headers", []):
            if k == b"x-forwarded-for":
                return v.decode("latin-1").split(",")[0].strip()[:64]
    client = scope.get("client")
    return client[0] if client else "unknown"


def request_id_of(headers: dict[str, str]) -> str:
    """The client's X-Request-ID when it is a safe token, else a fresh one."""
    rid = headers.get("x-request-id", "")
    return rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex


class _Exchange:
    """One HTTP request/response as the middleware sees it: what has been sent so far and whether the request
    holds an in-flight slot."""

    def __init__(self, send: Send, rid: str, state: dict[str, object], counted: bool) -> None:
        self._send = send
        self.rid = rid
        self.state = state
        self.counted = counted
        self.holder: dict[str, int] = {"status": 0, "streaming": False}
        self.slot_taken = False

    @property
    def status(self) -> int:
        return int(self.holder["status"])

    async def send(self, message: Message) -> None:
        """Every response goes out with its request id and the security headers; an error's code is noted."""
        if message["type"] == "http.response.start":
            self.holder["status"] = message["status"]
            hdrs = list(message.get("headers", []))
            ctype = next((v for k, v in hdrs if k.lower() == b"content-type"), b"")
            hdrs.append((b"x-request-id", self.rid.encode()))
            hdrs += security_headers(ctype)
            message = {**message, "headers": hdrs}
            self.holder["streaming"] = ctype.startswith(b"text/event-stream")
        elif message["type"] == "http.response.body" and self.status >= 400:
            if "error_code" not in self.state:
                self.state["error_code"] = error_code_of(self.status, message.get("body", b""))
        await self._send(message)

    async def respond(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        extra: dict[str, str] | None = None,
        unread: BodyReader | None = None,
    ) -> None:
        body = json.dumps(error_body(code, message)).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await self.send({"type": "http.response.start", "status": status, "headers": hdrs})
        if unread is None:
            await self._send({"type": "http.response.body", "body": body})
            return
        # The answer goes out whole, then what the client still sends of its body is read and dropped
        # before the response is complete (and the connection closed): closing with unread data would
        # reset the connection before the client has read the answer.
        await self._send({"type": "http.response.body", "body": body, "more_body": True})
        await unread.discard_rest()
        await self._send({"type": "http.response.body", "body": b""})


class GatewayMiddleware:
    """Pure ASGI (streams pass straight through)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: GatewayMetrics,
        window: list[StatsWindow],
        max_inflight: int,
        max_body_bytes: int,
        max_upload_bytes: int,
        body_timeout_s: float = 10.0,
        trust_forwarded_for: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.window = window  # one-element holder, swapped by the stats publisher
        self.max_inflight = max_inflight
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s
        self.trust_forwarded_for = trust_forwarded_for
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = request_id_of(headers)
        token = correlation_id.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        ip = client_ip(scope, self.trust_forwarded_for)
        state["client_ip"] = ip
        start = time.perf_counter()
        counted = path not in EXEMPT_PATHS and not path.endswith("/events")
        exchange = _Exchange(send, rid, state, counted)
        try:
            await self._handle(scope, receive, exchange, path, headers)
        finally:
            self._record(scope, path, exchange.holder, start, ip, rid)
            correlation_id.reset(token)

    async def _handle(
        self, scope: Scope, receive: Receive, exchange: _Exchange, path: str, headers: dict[str, str]
    ) -> None:
        """Shed load and refuse oversized bodies before the app runs; then run it behind the body reader."""
        if exchange.counted and self.inflight >= self.max_inflight:
            self.metrics.shed.inc()
            await exchange.respond(
                503, ErrorCode.SERVICE_UNAVAILABLE, "gateway overloaded, retry shortly", {"Retry-After": "1"}
            )
            return
        limit = self.max_upload_bytes if path in UPLOAD_PATHS else self.max_body_bytes
        refusal = check_headers(path, headers, limit)
        if refusal is not None:
            unread = BodyReader(receive, path, limit, self.body_timeout_s, has_body(headers), lambda: None)
            await exchange.respond(refusal.status, refusal.code, refusal.message, {"Connection": "close"}, unread)
            return
        reader = BodyReader(
            receive, path, limit, self.body_timeout_s, has_body(headers), lambda: self._take_slot(exchange)
        )
        try:
            await self._run_app(scope, reader, exchange, path)
        finally:
            if reader.refusal is not None and exchange.status == 0:
                # the rest of the body is never read: the connection cannot carry another request
                refused = reader.refusal
                await exchange.respond(refused.status, refused.code, refused.message, {"Connection": "close"}, reader)
            self._release_slot(exchange)

    async def _run_app(self, scope: Scope, reader: BodyReader, exchange: _Exchange, path: str) -> None:
        async def app_send(message: Message) -> None:
            if reader.refusal is None:  # once the body is refused, the app's own answer is dropped
                await exchange.send(message)

        try:
            await self.app(scope, reader, app_send)
        except BodyRefused:
            pass
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if exchange.status == 0:
                await exchange.respond(500, ErrorCode.INTERNAL_ERROR, "internal error")

    def _take_slot(self, exchange: _Exchange) -> None:
        # A request holds an in-flight slot once its body is in: a client trickling a body holds none.
        if exchange.counted and not exchange.slot_taken:
            exchange.slot_taken = True
            self.inflight += 1
            self.metrics.inflight_now = self.inflight
            self.metrics.inflight.inc()

    def _release_slot(self, exchange: _Exchange) -> None:
        if exchange.slot_taken:
            self.inflight -= 1
            self.metrics.inflight_now = self.inflight
            self.metrics.inflight.dec()

    def _record(self, scope: Scope, path: str, holder: dict[str, int], start: float, ip: str, rid: str) -> None:
        status = int(holder["status"] or 0) or 500
        elapsed = time.perf_counter() - start
        route = scope.get("route")
        route_path = getattr(route, "path", None) or ("/socket.io" if path.startswith("/socket.io") else "unmatched")
        method = scope.get("method", "")
        self.metrics.requests.labels(method, route_path, str(status)).inc()
        self.metrics.total += 1
        if not holder["streaming"]:
            self.metrics.latency.labels(method, route_path).observe(elapsed)
        code = None
        if status >= 400:
            code = scope.get("state", {}).get("error_code") or code_for_status(status).value
            self.metrics.errors.labels(route_path, code).inc()
            self.window[0].add_code(code)
        if status >= 500:
            self.metrics.total_errors += 1
        if path not in EXEMPT_PATHS:
            # streams (SSE, Socket.IO long-polls) last as long as the client stays: not a latency
            timed = not holder["streaming"] and not path.startswith("/socket.io")
            self.window[0].add(status, elapsed * 1000 if timed else None)
            self.metrics.recent.add(status, elapsed * 1000 if timed else None, code)
            if timed:
                log_slow("request", f"{method} {route_path}", elapsed, status=status, request_id=rid)
        principal = scope.get("state", {}).get("principal")
        access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "event": "access",
                "method": method,
                "path": path,
                "route": route_path,
                "status": status,
                "user_id": getattr(principal, "user_id", None),
                "key_id": getattr(principal, "key_id", None),
                "latency_ms": round(elapsed * 1000, 2),
                "request_id": rid,
                "client_ip": ip,
            },
        )
