"""Request/reply: requests with one reply inbox per connection and a brief retry while nobody answers, and
endpoints on the NATS services protocol (`nats.micro`) whose handlers run concurrently, bounded per
process, with the error-reply convention (`Nats-Service-Error-Code`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service as MicroService
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from adp_common.bus import nats_internals
from adp_common.bus.connection import BusConnection
from adp_common.bus.wire import (
    CORRELATION_HEADER,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    NO_RESPONDERS_STATUS,
    STATUS_HEADER,
    M,
    RequestContext,
    decode_reply,
    encode_payload,
    short_error,
)
from adp_common.errors import ErrorCode, PlatformError
from adp_common.logging import correlation_id, log_slow
from adp_common.retry import Backoff, retry
from adp_common.telemetry import extract_context, inject_headers, tracer

log = logging.getLogger("adp.bus")

HANDLER_BACKLOG_LIMIT = 65536  # requests waiting for a free handler before new ones are dropped
# Tries while nobody answers: a copy restarting, or a subscription a moment from propagating (pauses 0.05,
# 0.2 and 0.5 s).
NO_RESPONDER_RETRY = Backoff(initial_s=0.05, max_s=0.5, attempts=4, multiplier=4)

Handler = Callable[[Any, RequestContext], Awaitable[BaseModel | dict[str, Any] | None]]


class RequestReply(BusConnection):
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
        data, hdrs = encode_payload(payload), self._request_headers(headers)
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
        data, hdrs = encode_payload(payload), self._request_headers(headers)
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
        published = True  # the first try's request is out already

        async def one_try() -> Msg:
            nonlocal reply, published
            if not published:
                reply = await self._publish_request(subject, data, headers)
            published = False
            return await asyncio.wait_for(reply, max(0.01, deadline - time.monotonic()))

        try:
            msg = await retry(NO_RESPONDER_RETRY, one_try, retry_on=(NoRespondersError,), deadline=deadline)
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
        slow_log_kind: str | None = "bus",
    ) -> None:
        """Answer requests on `subject` (queue group = service name, so copies share the load).

        The handler gets the parsed request and a RequestContext and returns the reply model. A raised
        PlatformError becomes an error reply with its code; a bad request a VALIDATION_ERROR reply.
        Handlers run concurrently (bounded), so one slow request never blocks the others."""
        micro = await self._micro_service()

        async def run(req: MicroRequest) -> None:
            started = time.perf_counter()
            await self._answer(req, handler, request_model, subject, span=f"serve {name or subject}")
            if slow_log_kind:
                cid = (req.headers or {}).get(CORRELATION_HEADER)  # the handler's context is gone by now
                log_slow(slow_log_kind, name or subject, time.perf_counter() - started, correlation_id=cid)

        def dispatch(req: MicroRequest) -> None:
            self._dispatch(req, run, subject)

        await nats_internals.add_endpoint(
            micro,
            name=name or subject.replace(".", "-"),
            subject=subject,
            queue_group=queue or self.name,
            dispatch=dispatch,
        )
        # Make sure the server has the subscription before anyone is told we are ready.
        await self.nc.flush(timeout=5)

    async def _answer(
        self, req: MicroRequest, handler: Handler, request_model: type[BaseModel] | None, subject: str, span: str
    ) -> None:
        headers = dict(req.headers or {})
        token = otel_context.attach(extract_context(headers))
        cid_token = correlation_id.set(headers.get(CORRELATION_HEADER))
        try:
            with tracer().start_as_current_span(span, kind=trace.SpanKind.SERVER):
                try:
                    parsed = (
                        request_model.model_validate_json(req.data or b"{}")
                        if request_model is not None
                        else (req.data or b"")
                    )
                    result = await handler(parsed, RequestContext(subject=req.subject, headers=headers))
                    await req.respond(encode_payload(result))
                except ValidationError as err:
                    await self._respond_error(req, PlatformError(ErrorCode.VALIDATION_ERROR, short_error(err)))
                except PlatformError as err:
                    await self._respond_error(req, err)
                except Exception:
                    log.exception("handler for %s failed", subject)
                    await self._respond_error(req, PlatformError(ErrorCode.INTERNAL_ERROR, "internal error"))
        finally:
            correlation_id.reset(cid_token)
            otel_context.detach(token)

    def _dispatch(
        self, req: MicroRequest, run: Callable[[MicroRequest], Coroutine[Any, Any, None]], subject: str
    ) -> None:
        # back-pressure: at most `_handler_limit` handlers in flight per process, the rest wait in order
        if len(self._handler_tasks) >= self._handler_limit:
            if len(self._handler_backlog) >= HANDLER_BACKLOG_LIMIT:
                log.warning("request on %s dropped: %d waiting for a handler", subject, HANDLER_BACKLOG_LIMIT)
                return
            self._handler_backlog.append(lambda: self._dispatch(req, run, subject))
            return
        task = asyncio.create_task(run(req))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_finished)

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
