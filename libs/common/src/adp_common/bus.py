"""A thin bus over nats-py: request/reply with queue groups (NATS services protocol), core pub/sub,
JetStream streams with de-duplicated publish, durable pull consumers with bounded concurrency, and KV.

Trace context travels in message headers on every hop. See docs/architecture.md for why this is a thin
wrapper and not FastStream (measured there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service as MicroService
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

import adp_common.schemas  # noqa: F401  (registers every event type for decode())
from adp_common.catalog import Catalog, StreamSpec
from adp_common.clock import RepeatClock
from adp_common.envelope import Envelope, decode, wrap
from adp_common.errors import ErrorBody, ErrorCode, PlatformError
from adp_common.logging import correlation_id
from adp_common.settings import ConfigError
from adp_common.telemetry import current_traceparent, extract_context, inject_headers, tracer

log = logging.getLogger("adp.bus")

M = TypeVar("M", bound=BaseModel)
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
CORRELATION_HEADER = "Adp-Correlation-Id"
MSG_ID_HEADER = "Nats-Msg-Id"
STATUS_HEADER = "Status"  # how nats-py hands over a status message's code
NO_RESPONDERS_STATUS = "503"
PING_INTERVAL_S = 1.0  # the connection is given up after MAX_OUTSTANDING_PINGS pings without an answer
MAX_OUTSTANDING_PINGS = 3
HANDLER_BACKLOG_LIMIT = 65536
# A JetStream publish is repeated (same message id) for this long when unanswered: a stream leader election
# after a server is lost takes a few seconds, a frozen server's clients need ~6 s to notice (pings).
PUBLISH_RETRY_S = 30.0
PUBLISH_RETRY_PAUSES = (
    0.1,
    0.25,
    0.5,
    1.0,
)  # then 1.0 each time  # requests waiting for a free handler before new ones are dropped


# what an unanswered or leaderless JetStream publish raises
PUBLISH_RETRYABLE = (NatsTimeoutError, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)


class Retry(Exception):
    """Raised by a consumer handler: nak the message so it is redelivered after `delay` seconds."""

    def __init__(self, reason: str = "", delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class ReplicasUnavailable(ConfigError):
    """ADP_STREAM_REPLICAS asks for more replicas than the NATS servers can hold: the service stops at start."""


class Reject(Exception):
    """Raised by a consumer handler: the message can never be processed; terminate it (no redelivery)."""


@dataclass
class RequestContext:
    subject: str
    headers: dict[str, str]


@dataclass
class Delivery:
    """What a JetStream consumer handler receives."""

    msg: Msg
    envelope: Envelope
    num_delivered: int
    stream_seq: int

    @property
    def payload(self) -> Any:
        return self.envelope.payload

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})


Handler = Callable[[Any, RequestContext], Awaitable[BaseModel | dict[str, Any] | None]]
ConsumerHandler = Callable[[Delivery], Awaitable[None]]


@dataclass
class Consumer:
    """A running durable pull consumer; stop() stops fetching and drains in-flight messages."""

    name: str
    task: asyncio.Task[None]
    # pushes back the ack deadline (in_progress) of every message in flight, the due ones in one write
    progress: RepeatClock
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    processed: int = 0
    failed: int = 0

    @property
    def progress_clock(self) -> asyncio.Task[None] | None:
        return self.progress.task

    async def stop(self, grace: float = 20.0) -> None:
        self.stopping.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, timeout=grace)
        if self.inflight:
            _, pending = await asyncio.wait(self.inflight, timeout=grace)
            for t in pending:
                t.cancel()
        self.progress.stop()


def _encode(payload: BaseModel | dict[str, Any] | bytes | None) -> bytes:
    if payload is None:
        return b"{}"
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, default=str).encode()


def decode_reply(msg: Msg, response_model: type[M] | None) -> Any:
    """A reply's payload (parsed into `response_model` when given); an error reply raises PlatformError
    with the responder's code."""
    if msg.headers and ERROR_CODE_HEADER in msg.headers:
        code = msg.headers.get(ERROR_CODE_HEADER, "INTERNAL_ERROR")
        try:
            body = ErrorBody.model_validate_json(msg.data)
            raise PlatformError(body.code, body.message)
        except ValidationError:
            code = code if code in ErrorCode.__members__ else ErrorCode.INTERNAL_ERROR
            raise PlatformError(code, msg.headers.get(ERROR_HEADER, "error")) from None
    if response_model is None:
        return json.loads(msg.data) if msg.data else None
    return response_model.model_validate_json(msg.data)


def server_urls(url: str) -> list[str]:
    """The servers of ADP_NATS_URL: one URL, or a cluster's URLs separated by commas. The client starts at
    one of them (in random order) and fails over to the others while reconnecting."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no NATS server URL given")
    return urls


def send_now(nc: NATS) -> None:
    """Put what the connection has queued on its socket now. nats-py leaves every publish to its flusher
    task, which writes on a later turn of the event loop — under load a busy turn later, which a first token
    waits for. Only when the socket's write buffer is empty: otherwise the flusher writes it, and its
    drain() keeps the back-pressure of a slow server. (nats-py internals, pinned by uv.lock; a test fails
    when they change.)"""
    try:
        if nc._pending_data_size == 0 or not nc.is_connected:
            return
        writer = nc._transport._io_writer  # type: ignore[union-attr]
        if writer.transport.get_write_buffer_size():
            return
        writer.writelines(nc._pending)
    except (AttributeError, RuntimeError):  # no transport (reconnecting, closed): the flusher's turn
        return
    nc._pending = []
    nc._pending_data_size = 0


class _Inline:
    """Takes the place of a nats-py subscription's pending-message queue: each message goes to `handler`
    as the connection's read loop parses it, with no queue, task or turn of the event loop in between.

    It holds its subscription weakly: the subscription holds it, and a cycle would leave every finished
    subscription — with the handler and all the handler's closure holds (an LLM call's state, a client's
    event stream) — to the cyclic GC, whose full collections a service under load runs rarely (see
    adp_common.service.freeze_startup_heap): memory grew with every call until one came."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: Subscription, handler: Callable[[Msg], None]) -> None:
        self.sub = weakref.ref(sub)
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        sub = self.sub()
        if sub is not None:  # the read loop holds the subscription while it hands a message over
            sub._pending_size -= len(msg.data)
        try:
            self.handler(msg)
        except Exception:  # never into the read loop: that would drop the connection
            log.exception("inline handler for %s failed", msg.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None

    async def get(self) -> Msg:  # what a callback subscription's task waits on: nothing ever comes here
        return await asyncio.get_running_loop().create_future()


class Bus:
    def __init__(self, nc: NATS, catalog: Catalog, *, name: str = "adp", instance: str = "", replicas: int = 1) -> None:
        self.nc = nc
        self.replicas = replicas  # of every stream and KV bucket this bus creates (ADP_STREAM_REPLICAS)
        self.js: JetStreamContext = nc.jetstream(timeout=10)
        self.catalog = catalog
        self.name = name
        self.instance = instance
        self._micro: MicroService | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handler_limit = 64  # request handlers in flight per process (Bus.connect's handler_concurrency)
        self._handler_backlog: deque[Callable[[], None]] = deque()  # requests waiting for a free handler
        self._consumers: list[Consumer] = []
        self._subs: list[Subscription] = []
        self._kv: dict[str, KeyValue] = {}
        self._reply_prefix: str | None = None
        self._reply_tokens = itertools.count()
        self._replies: dict[str, asyncio.Future[Msg]] = {}

    # ---- connection -----------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        url: str,  # one server's URL, or a cluster's: several separated by commas
        *,
        prefix: str = "adp",
        name: str = "adp",
        instance: str = "",
        connect_timeout: float = 5.0,
        handler_concurrency: int = 64,
        replicas: int = 1,
        ping_interval: float = PING_INTERVAL_S,
    ) -> Bus:
        async def on_error(err: Exception) -> None:
            log.warning("nats error: %s", err)

        async def on_disconnect() -> None:
            if not nc.is_closed and not nc.is_draining:
                log.warning("nats disconnected")

        async def on_reconnect() -> None:
            log.info("nats reconnected")

        nc = NATS()
        await nc.connect(
            servers=server_urls(url),
            name=f"{name}:{instance}" if instance else name,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            # A server that stops answering (frozen, cut off by the network) leaves its TCP connection open:
            # only unanswered pings show it, so they are frequent, and the client moves to another server.
            ping_interval=ping_interval,
            max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            pending_size=64 * 1024 * 1024,
        )
        bus = cls(nc, Catalog(prefix), name=name, instance=instance, replicas=replicas)
        bus._handler_limit = handler_concurrency
        return bus

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def close(self, grace: float = 20.0) -> None:
        """Stop taking work, let in-flight handlers and consumers finish (up to `grace`), then drain."""
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await asyncio.gather(*(c.stop(grace) for c in self._consumers), return_exceptions=True)
        deadline = time.monotonic() + grace
        while self._handler_tasks and (left := deadline - time.monotonic()) > 0:  # the backlog starts more
            await asyncio.wait(set(self._handler_tasks), timeout=left)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()

    # ---- request / reply ------------------------------------------------------------------------------
    async def request(
        self,
        subject: str,
        payload: BaseModel | dict[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        response_model: type[M] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request and return the reply (parsed into `response_model` when given).

        Raises PlatformError with the responder's code on an error reply, SERVICE_UNAVAILABLE when nobody
        answers or the reply is late."""
        data, hdrs = _encode(payload), self._request_headers(headers)
        reply = await self._publish_request(subject, data, hdrs)
        return await self._await_reply(subject, data, hdrs, reply, timeout, response_model)

    async def start_request(
        self,
        subject: str,
        payload: BaseModel | dict[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        response_model: type[M] | None = None,
        headers: dict[str, str] | None = None,
    ) -> asyncio.Task[Any]:
        """`request`, split: the request is on the connection when this returns, and the returned task
        awaits the reply. A task started to call `request` would publish only on a later turn of the event
        loop; this way what the caller publishes next leaves in the same socket write (a dialogue turn's
        `message-start` and its LLM request do), and the caller can cancel the wait."""
        data, hdrs = _encode(payload), self._request_headers(headers)
        reply = await self._publish_request(subject, data, hdrs)
        return asyncio.ensure_future(self._await_reply(subject, data, hdrs, reply, timeout, response_model))

    def _request_headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        hdrs = inject_headers(headers)
        cid = correlation_id.get()
        if cid:
            hdrs.setdefault(CORRELATION_HEADER, cid)
        return hdrs

    async def _publish_request(self, subject: str, data: bytes, headers: dict[str, str]) -> asyncio.Future[Msg]:
        """Publish with a reply subject under this connection's reply inbox (one wildcard subscription, as
        nats-py's own request does); the future gets the reply, or NoRespondersError."""
        if self._reply_prefix is None:
            self._reply_prefix = self.nc.new_inbox()
            await self.nc.subscribe(self._reply_prefix + ".*", cb=self._on_reply)
        token = str(next(self._reply_tokens))
        reply: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._replies[token] = reply
        reply.add_done_callback(lambda _: self._replies.pop(token, None))
        try:
            await self.nc.publish(subject, data, reply=f"{self._reply_prefix}.{token}", headers=headers)
        except BaseException:
            reply.cancel()
            raise
        return reply

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._replies.pop(msg.subject.rpartition(".")[2], None)
        if reply is None or reply.done():
            return
        if msg.headers and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS and not msg.data:
            reply.set_exception(NoRespondersError())
        else:
            reply.set_result(msg)

    async def _await_reply(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str],
        reply: asyncio.Future[Msg],
        timeout: float,
        response_model: type[M] | None,
    ) -> Any:
        deadline = time.monotonic() + timeout
        try:
            # No responder can be a copy restarting or a subscription a moment from propagating: retry
            # briefly before reporting the service as unavailable.
            for pause in (0.05, 0.2, 0.5, None):
                try:
                    msg = await asyncio.wait_for(reply, max(0.01, deadline - time.monotonic()))
                    break
                except NoRespondersError:
                    if pause is None or time.monotonic() + pause >= deadline:
                        raise
                    await asyncio.sleep(pause)
                    reply = await self._publish_request(subject, data, headers)
        except NoRespondersError:
            raise PlatformError(ErrorCode.SERVICE_UNAVAILABLE, f"no service answers {subject}") from None
        except TimeoutError:
            raise PlatformError(
                ErrorCode.SERVICE_UNAVAILABLE, f"{subject} did not answer within {timeout:g}s"
            ) from None
        finally:
            reply.cancel()  # no-op once answered; otherwise forget the pending reply
        return decode_reply(msg, response_model)

    async def _micro_service(self) -> MicroService:
        if self._micro is None:
            self._micro = await add_service(
                self.nc,
                name=self.name,
                version="0.1.0",
                description=f"AI Dialogue Platform {self.name}",
                metadata={"instance": self.instance, "prefix": self.catalog.prefix},
                queue_group=self.name,
            )
        return self._micro

    async def serve(
        self,
        subject: str,
        handler: Handler,
        request_model: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
    ) -> None:
        """Answer requests on `subject` (queue group = service name, so copies share the load).

        The handler gets the parsed request and a RequestContext and returns the reply model. A raised
        PlatformError becomes an error reply with its code; a bad request a VALIDATION_ERROR reply.
        Handlers run concurrently (bounded), so one slow request never blocks the others."""
        micro = await self._micro_service()

        async def run(req: MicroRequest) -> None:
            headers = dict(req.headers or {})
            token = otel_context.attach(extract_context(headers))
            cid_token = correlation_id.set(headers.get(CORRELATION_HEADER))
            try:
                with tracer().start_as_current_span(f"serve {name or subject}", kind=trace.SpanKind.SERVER):
                    try:
                        parsed = (
                            request_model.model_validate_json(req.data or b"{}")
                            if request_model is not None
                            else (req.data or b"")
                        )
                        result = await handler(parsed, RequestContext(subject=req.subject, headers=headers))
                        await req.respond(_encode(result))
                    except ValidationError as err:
                        await self._respond_error(req, PlatformError(ErrorCode.VALIDATION_ERROR, _short(err)))
                    except PlatformError as err:
                        await self._respond_error(req, err)
                    except Exception:
                        log.exception("handler for %s failed", subject)
                        await self._respond_error(req, PlatformError(ErrorCode.INTERNAL_ERROR, "internal error"))
            finally:
                correlation_id.reset(cid_token)
                otel_context.detach(token)

        def dispatch(req: MicroRequest) -> None:
            # back-pressure: at most `_handler_limit` handlers in flight per process, the rest wait in order
            if len(self._handler_tasks) >= self._handler_limit:
                if len(self._handler_backlog) >= HANDLER_BACKLOG_LIMIT:
                    log.warning("request on %s dropped: %d waiting for a handler", subject, HANDLER_BACKLOG_LIMIT)
                    return
                self._handler_backlog.append(lambda: dispatch(req))
                return
            task = asyncio.create_task(run(req))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_finished)

        async def on_request(req: MicroRequest) -> None:
            dispatch(req)

        await micro.add_endpoint(
            name=name or subject.replace(".", "-"),
            subject=subject,
            handler=on_request,
            queue_group=queue or self.name,
        )
        endpoint = micro._endpoints[-1]

        def on_msg(msg: Msg) -> None:
            endpoint._num_requests += 1  # what nats.micro's own dispatch counts ($SRV.STATS)
            dispatch(MicroRequest(msg))

        # Requests are dispatched from the read loop (see subscribe_inline): a handler starts one turn of
        # the event loop sooner than through nats.micro's subscription task. Its callback path stays valid.
        sub = endpoint._subscription
        if sub is not None:
            sub._pending_queue = _Inline(sub, on_msg)  # type: ignore[assignment]
        # Make sure the server has the subscription before anyone is told we are ready.
        await self.nc.flush(timeout=5)

    def _handler_finished(self, task: asyncio.Task[None]) -> None:
        self._handler_tasks.discard(task)
        if self._handler_backlog:
            self._handler_backlog.popleft()()

    @staticmethod
    async def _respond_error(req: MicroRequest, err: PlatformError) -> None:
        with contextlib.suppress(Exception):
            await req.respond(
                err.body().model_dump_json().encode(),
                headers={ERROR_CODE_HEADER: err.code.value, ERROR_HEADER: err.message[:200]},
            )

    # ---- core pub/sub ---------------------------------------------------------------------------------
    async def publish(
        self, subject: str, payload: BaseModel | dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Fire-and-forget core NATS publish (token chunks, live notifications)."""
        await self.nc.publish(subject, _encode(payload), headers=headers)

    async def subscribe(
        self,
        subject: str,
        cb: Callable[[Msg], Awaitable[None]] | None = None,
        *,
        queue: str = "",
        pending_msgs_limit: int = 65536,
    ) -> Subscription:
        sub = await self.nc.subscribe(subject, queue=queue, cb=cb, pending_msgs_limit=pending_msgs_limit)
        await self.nc.flush(timeout=5)
        if cb is not None:
            self._subs.append(sub)
        return sub

    async def subscribe_inline(
        self, subject: str, handler: Callable[[Msg], None], *, flush: bool = True
    ) -> Subscription:
        """Subscribe with a plain function called from the connection's read loop for every message, in
        order: one turn of the event loop sooner than a `subscribe` callback and no task per subscription.
        `handler` must be quick and must not block; it usually hands the message on (a buffer, a future).
        `flush=False` skips the round trip that makes sure the server has the subscription on return (for
        a caller whose next message on this connection is what depends on it)."""
        sub = await self.nc.subscribe(subject)
        sub._pending_queue = _Inline(sub, handler)  # type: ignore[assignment]
        # nats-py gives a subscription without a callback a message iterator, which references the
        # subscription back (a cycle, see _Inline); an inline subscription is never iterated.
        sub._message_iterator = None
        if flush:
            await self.nc.flush(timeout=5)
        return sub

    # ---- notices: best-effort control messages every copy of a service hears ---------------------------
    async def notify(self, subject: str, notice: BaseModel) -> None:
        """Publish a notice to every subscriber (no queue group). Best effort: a failure is logged, not
        raised — whoever sends a notice has a slower fallback for a lost one (a TTL, a stale check)."""
        try:
            await self.publish(subject, notice)
        except Exception as err:
            log.warning("notice %s on %s not sent: %s", type(notice).__name__, subject, err)

    async def on_notice(self, subject: str, model: type[M], handler: Callable[[M], Awaitable[None] | None]) -> None:
        """Hear every notice on `subject` as a `model` (unreadable ones are logged and skipped)."""

        async def cb(msg: Msg) -> None:
            try:
                notice = model.model_validate_json(msg.data)
            except ValueError:
                log.warning("unreadable %s notice on %s", model.__name__, msg.subject)
                return
            result = handler(notice)
            if result is not None:
                await result

        await self.subscribe(subject, cb)

    # ---- JetStream ------------------------------------------------------------------------------------
    async def ensure_stream(self, spec: StreamSpec, *, replicas: int | None = None) -> None:
        """Create the stream, or update it to this config; safe to call from every copy at start.
        `replicas` defaults to the bus's (ADP_STREAM_REPLICAS)."""
        cfg = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=RetentionPolicy(spec.retention),
            storage=StorageType.FILE,
            max_age=spec.max_age_s,
            max_msgs=spec.max_msgs,
            duplicate_window=spec.duplicate_window_s,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas or self.replicas,
            description=spec.description or None,
        )
        try:
            await self.js.add_stream(cfg)
            return
        except APIError as err:
            _raise_if_replicas_unavailable(err, spec.name, cfg.num_replicas)
            if not isinstance(err, BadRequestError):
                raise
        # Exists with another config: update it, never lowering replicas an operator raised.
        current = await self.js.stream_info(spec.name)
        have = current.config.num_replicas or 1
        if have < cfg.num_replicas:
            log.info("stream %s: replicas raised from %d to %d", spec.name, have, cfg.num_replicas)
        cfg.num_replicas = max(cfg.num_replicas, have)
        await self._update_stream(cfg)

    async def _update_stream(self, cfg: StreamConfig) -> None:
        try:
            await self.js.update_stream(cfg)
        except APIError as err:
            _raise_if_replicas_unavailable(err, cfg.name or "", cfg.num_replicas or 1)
            raise

    async def ensure_streams(self, bases: list[str] | None = None, *, replicas: int | None = None) -> None:
        specs = self.catalog.streams if bases is None else [self.catalog.stream_by_base(b) for b in bases]
        for spec in specs:
            await self.ensure_stream(spec, replicas=replicas)

    async def publish_event(
        self,
        subject: str,
        payload: BaseModel,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
        retry_for: float = PUBLISH_RETRY_S,
    ) -> int:
        """Publish a registered payload in an Envelope to JetStream; `msg_id` de-duplicates within the
        stream's duplicate window. Returns the stream sequence.

        An unanswered publish (`timeout` each) is sent again, with the same id, for up to `retry_for`
        seconds: the stream may be electing a new leader or the client moving to another server, and the
        id makes a repeat of a publish that was stored in fact harmless."""
        env = wrap(payload, source=f"{self.name}/{self.instance}", traceparent=current_traceparent(), id=msg_id)
        hdrs = inject_headers(headers)
        hdrs[MSG_ID_HEADER] = env.id
        data = env.model_dump_json().encode()
        deadline = time.monotonic() + retry_for
        for pause in itertools.chain(PUBLISH_RETRY_PAUSES, itertools.repeat(PUBLISH_RETRY_PAUSES[-1])):
            try:
                ack = await self.js.publish(subject, data, timeout=timeout, headers=hdrs)
                return ack.seq
            except PUBLISH_RETRYABLE as err:
                if time.monotonic() + pause >= deadline:
                    raise
                log.info("publish on %s unanswered (%s); again in %.2f s", subject, type(err).__name__, pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable: the pauses never end")

    async def consume(
        self,
        stream: str,
        durable: str,
        handler: ConsumerHandler,
        *,
        filter_subject: str | None = None,
        concurrency: int = 16,
        batch: int = 32,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        backoff: float = 1.0,
        deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    ) -> Consumer:
        """Run a durable pull consumer (shared by every copy using the same `durable`).

        Ack after the handler returns; `Retry` naks with a delay; `Reject` or an undecodable message is
        terminated; any other exception naks with exponential backoff. While a handler runs its message
        is kept alive (in_progress) so long steps are not redelivered to another copy."""
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max(concurrency * 4, 64),
            filter_subject=filter_subject,
            deliver_policy=deliver_policy,
        )
        psub = await self.js.pull_subscribe(filter_subject or "", durable=durable, stream=stream, config=config)
        slots = asyncio.Semaphore(concurrency)
        consumer: Consumer

        async def handle(msg: Msg) -> None:
            headers = dict(msg.headers or {})
            token = otel_context.attach(extract_context(headers))
            consumer.progress.add(id(msg), msg.in_progress)
            try:
                meta = msg.metadata
                try:
                    env = decode(msg.data)
                except (ValidationError, ValueError, KeyError) as err:
                    log.error("rejecting undecodable message on %s: %s", msg.subject, _short(err))
                    await msg.term()
                    return
                with tracer().start_as_current_span(f"consume {durable}", kind=trace.SpanKind.CONSUMER):
                    await handler(
                        Delivery(
                            msg=msg, envelope=env, num_delivered=meta.num_delivered, stream_seq=meta.sequence.stream
                        )
                    )
                await msg.ack()
                consumer.processed += 1
            except Reject as err:
                log.error("terminating message on %s: %s", msg.subject, err)
                consumer.failed += 1
                with contextlib.suppress(Exception):
                    await msg.term()
            except Retry as err:
                with contextlib.suppress(Exception):
                    await msg.nak(delay=err.delay)
            except asyncio.CancelledError:
                # Shutting down mid-message: hand it straight back for another copy.
                with contextlib.suppress(Exception):
                    await msg.nak()
                raise
            except Exception:
                consumer.failed += 1
                n = msg.metadata.num_delivered if msg.metadata else 1
                delay = min(backoff * (2 ** (n - 1)), 30.0) * (0.5 + random.random() / 2)
                log.exception("handler failed on %s (delivery %d); retry in %.1fs", msg.subject, n, delay)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
            finally:
                consumer.progress.remove(id(msg))
                otel_context.detach(token)
                slots.release()

        async def loop() -> None:
            while not consumer.stopping.is_set():
                free = concurrency - len(consumer.inflight)
                if free <= 0:
                    # Full: wait for a handler to finish (its task leaves `inflight` when done).
                    await asyncio.wait(set(consumer.inflight), return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await psub.fetch(batch=min(batch, free), timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as err:  # connection trouble: back off, the client reconnects
                    if consumer.stopping.is_set():
                        break
                    log.warning("fetch on %s failed: %s", durable, err)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await slots.acquire()
                    task = asyncio.create_task(handle(msg))
                    consumer.inflight.add(task)
                    task.add_done_callback(consumer.inflight.discard)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

        # each message's ack deadline pushed back every ack_wait / 3 while its handler runs
        consumer = Consumer(name=durable, task=asyncio.create_task(loop()), progress=RepeatClock(ack_wait / 3))
        self._consumers.append(consumer)
        return consumer

    async def stream_messages(
        self, stream: str, subject: str, *, start_seq: int | None = None, limit: int = 10_000
    ) -> list[Msg]:
        """Read the stored messages on `subject` (oldest first): exactly those present when called.

        An ephemeral pull consumer reports how many messages match, then they are fetched in batches, so the
        answer never depends on a timing guess (an empty subject costs one round trip, not a timeout)."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq else DeliverPolicy.ALL,
            opt_start_seq=start_seq if start_seq else None,
            filter_subject=subject,
            inactive_threshold=10.0,
            mem_storage=True,
        )
        try:
            psub = await self.js.pull_subscribe(subject, stream=stream, config=config)
        except NotFoundError:
            return []
        out: list[Msg] = []
        try:
            want = min((await psub.consumer_info()).num_pending, limit)
            while len(out) < want:
                try:
                    out += await psub.fetch(batch=min(256, want - len(out)), timeout=5)
                except (NatsTimeoutError, TimeoutError):
                    break
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        return out

    async def kv(self, base: str, *, history: int = 1, ttl: float | None = None) -> KeyValue:
        """The KV bucket `base` (prefixed), created on first use with the bus's replicas; an existing bucket
        with fewer replicas is raised to them. Every bucket of the platform comes from here."""
        name = self.catalog.bucket(base)
        if name not in self._kv:
            self._kv[name] = await self._ensure_bucket(name, history, ttl)
        return self._kv[name]

    async def _ensure_bucket(self, name: str, history: int, ttl: float | None) -> KeyValue:
        try:
            return await self.js.create_key_value(bucket=name, history=history, ttl=ttl, replicas=self.replicas)
        except APIError as err:
            _raise_if_replicas_unavailable(err, name, self.replicas)
            if not isinstance(err, BadRequestError):
                raise
        # It exists with another config (another service's history or TTL, or replicas an operator changed),
        # or another copy created it at the same moment: use it, with at least our replicas.
        kv = await self.js.key_value(name)
        current = await self.js.stream_info(kv._stream)
        have = current.config.num_replicas or 1
        if have < self.replicas:
            log.info("bucket %s: replicas raised from %d to %d", name, have, self.replicas)
            await self._update_stream(current.config.evolve(num_replicas=self.replicas))
        return kv


# JetStream API errors that mean the servers cannot hold that many replicas: 10074 "replicas > 1 not
# supported in non-clustered mode", 10005 "no suitable peers for placement", 10023 "insufficient resources".
REPLICAS_UNAVAILABLE_ERRORS = frozenset({10074, 10005, 10023})


def _raise_if_replicas_unavailable(err: APIError, what: str, replicas: int) -> None:
    """A replica count the NATS servers cannot place stops the service at start with a message that says so
    (ADP_STREAM_REPLICAS larger than the cluster), instead of a JetStream error code."""
    if err.err_code not in REPLICAS_UNAVAILABLE_ERRORS:
        return
    message = (
        f"ADP_STREAM_REPLICAS={replicas}: the NATS servers cannot keep {replicas} replicas of {what} "
        f"({err.description or err.err_code}). Set ADP_STREAM_REPLICAS to at most the number of JetStream "
        "servers in the cluster (1 for a single server)."
    )
    log.error(message)
    raise ReplicasUnavailable(message) from None


def _short(err: Exception) -> str:
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
        return "; ".join(parts)
    return str(err)[:300]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05) -> bool:
    """Poll an async predicate until true or timeout (used by start-up checks and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False
