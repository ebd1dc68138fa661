"""A fake LLM provider: a real HTTP server speaking the OpenAI-compatible chat completions API
(`/v1/chat/completions`, `/v1/models`) and the Anthropic messages API (`/v1/messages`), streaming and
not, with usage figures and switchable faults.

In tests:

    async with FakeProvider() as fake:          # free port, in this event loop
        fake.add_fault(Fault(status=500, times=1))
        ... base URL fake.openai_base (…/v1) or fake.anthropic_base ...
        assert fake.stats.calls == 2

From outside (CLI `adp-fake-provider --port N`): POST /_faults with a Fault JSON (or a list), DELETE
/_faults, POST /_config with Timing JSON, GET /_stats, POST /_reset. Rate-based faults, the same
`ProviderFault` the simulated provider takes (`adp faults NAME --fake-provider URL ...`): GET, PUT and DELETE
/_provider_fault.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adp_common.net import listening_socket
from adp_common.schemas.faults import ProviderFault, decide
from adp_common.service import run_loop
from adp_testing.fake_provider_setup import (
    DEFAULT_TEXT,
    Drop,
    Fault,
    Protocol,
    Stats,
    Timing,
    prompt_tokens,
    split_tokens,
)
from adp_testing.fake_provider_streams import anthropic_stream, openai_stream

__all__ = ["DEFAULT_TEXT", "FakeProvider", "Fault", "Stats", "Timing"]


class FakeProvider:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, timing: Timing | None = None) -> None:
        self.host = host
        self.port = port
        self.timing = timing or Timing()
        self.faults: list[Fault] = []
        self.provider_fault = ProviderFault()
        self.stats = Stats()
        self.max_bodies = 100
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
                Route("/_faults", self._faults_api, methods=["POST", "DELETE", "GET"]),
                Route("/_provider_fault", self._provider_fault_api, methods=["PUT", "DELETE", "GET"]),
                Route("/_config", self._config_api, methods=["POST"]),
                Route("/_stats", self._stats_api, methods=["GET"]),
                Route("/_reset", self._reset_api, methods=["POST"]),
            ]
        )

    # ---- Python API ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base(self) -> str:
        return self.url

    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        self.faults.clear()
        self.provider_fault = ProviderFault()
        self.stats = Stats()

    async def start(self) -> None:
        sock = listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="critical", access_log=False, lifespan="off", timeout_keep_alive=30, backlog=4096
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- fault selection ----------------------------------------------------------------------------
    async def _rated_fault(self) -> Response | None:
        """The answer the rate-based `provider_fault` gives this call, or None to answer normally."""
        fault = self.provider_fault
        decision = decide(fault if fault.active else None, random.random())
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.outcome == "stall":
            await asyncio.sleep(fault.stall_s)
        status = {"outage": 503, "error": 500, "rate_limited": 429, "stall": 504}.get(decision.outcome)
        if status is None:
            return None
        headers = {"retry-after": f"{fault.retry_after_s:g}"} if status == 429 else {}
        body = json.dumps({"error": {"message": f"injected {decision.outcome}"}})
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    def _take_fault(self, protocol: Protocol, model: str) -> Fault | None:
        for f in self.faults:
            if f.protocol is not None and f.protocol != protocol:
                continue
            if f.model is not None and f.model != model:
                continue
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    self.faults.remove(f)
            return f
        return None

    def _count(self, protocol: Protocol, body: dict[str, Any]) -> None:
        self.stats.calls += 1
        self.stats.calls_by_protocol[protocol] = self.stats.calls_by_protocol.get(protocol, 0) + 1
        if len(self.stats.bodies) < self.max_bodies:
            self.stats.bodies.append(body)

    def _usage_counted(self, inp: int, out: int) -> None:
        self.stats.completed += 1
        self.stats.input_tokens += inp
        self.stats.output_tokens += out

    async def _prelude(
        self, request: Request, protocol: Protocol
    ) -> tuple[dict[str, Any], Fault | None, Response | None]:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return {}, None, JSONResponse({"error": {"message": "invalid JSON body"}}, status_code=400)
        self._count(protocol, body)
        if request.client is not None:
            self.stats.client_ports.add(request.client.port)
        rated = await self._rated_fault()
        if rated is not None:
            return body, None, rated
        fault = self._take_fault(protocol, str(body.get("model", "")))
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            content = fault.body if fault.body is not None else json.dumps({"error": {"message": "injected fault"}})
            return (
                body,
                fault,
                Response(content, status_code=fault.status, headers=headers, media_type="application/json"),
            )
        return body, fault, None

    def _broken_body(self, fault: Fault, partial: bytes) -> Response | None:
        """Non-streaming answers of a drop/stall fault: part of the body, then a drop (or a stall)."""
        if fault.drop_after is None and fault.stall_after is None:
            return None

        async def gen() -> AsyncIterator[bytes]:
            yield partial
            if fault.stall_after is not None:
                await asyncio.sleep(fault.stall_s)
            raise Drop()

        return StreamingResponse(gen(), media_type="application/json")

    async def _token_stream(self, fault: Fault | None) -> AsyncIterator[tuple[int, str]]:
        t = self.timing
        if t.ttft_s:
            await asyncio.sleep(t.ttft_s)
        for i, tok in enumerate(split_tokens(t.text)):
            if fault is not None and fault.stall_after is not None and i == fault.stall_after:
                await asyncio.sleep(fault.stall_s)
            if fault is not None and fault.drop_after is not None and i == fault.drop_after:
                raise Drop()
            if i and t.token_interval_s:
                await asyncio.sleep(t.token_interval_s)
            yield i, tok

    def _whole_fault(self, fault: Fault | None, wrong: dict[str, Any], partial: bytes) -> Response | None:
        """The answer a fault makes of a non-streamed call, if it changes it: JSON of the wrong shape, a body
        that is not JSON, or a body cut off after `partial`."""
        if fault is None:
            return None
        if fault.wrong_json:
            return JSONResponse(wrong)
        if fault.malformed_sse:
            return Response("{not json", media_type="application/json")
        return self._broken_body(fault, partial)

    # ---- OpenAI-compatible ----------------------------------------------------------------------------
    async def _openai(self, request: Request) -> Response:
        body, fault, early = await self._prelude(request, "openai")
        if early is not None:
            return early
        model = str(body.get("model", "fake-model"))
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        inp = prompt_tokens(body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
            return StreamingResponse(
                openai_stream(head, self._token_stream(fault), fault, inp, include_usage, self._usage_counted),
                media_type="text/event-stream",
            )
        changed = self._whole_fault(
            fault, {"id": cid, "object": "chat.completion", "result": "no choices here"}, b'{"id": "x", "choices": ['
        )
        if changed is not None:
            return changed
        text = self.timing.text
        if self.timing.ttft_s:
            await asyncio.sleep(self.timing.ttft_s)
        out = len(split_tokens(text))
        self._usage_counted(0 if fault and fault.no_usage else inp, 0 if fault and fault.no_usage else out)
        resp: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
        if not (fault and fault.no_usage):
            resp["usage"] = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}
        return JSONResponse(resp)

    async def _models(self, _: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]},
        )

    # ---- Anthropic -----------------------------------------------------------------------------------
    async def _anthropic(self, request: Request) -> Response:
        body, fault, early = await self._prelude(request, "anthropic")
        if early is not None:
            return early
        model = str(body.get("model", "fake-claude"))
        mid = "msg_" + uuid.uuid4().hex[:12]
        inp = prompt_tokens(body)
        no_usage = bool(fault and fault.no_usage)
        if body.get("stream"):
            return StreamingResponse(
                anthropic_stream(mid, model, self._token_stream(fault), fault, inp, no_usage, self._usage_counted),
                media_type="text/event-stream",
            )
        changed = self._whole_fault(
            fault, {"id": mid, "type": "message", "contents": "wrong field"}, b'{"id": "x", "content": ['
        )
        if changed is not None:
            return changed
        if self.timing.ttft_s:
            await asyncio.sleep(self.timing.ttft_s)
        text = self.timing.text
        out = len(split_tokens(text))
        self._usage_counted(0 if no_usage else inp, 0 if no_usage else out)
        resp: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
        }
        if not no_usage:
            resp["usage"] = {"input_tokens": inp, "output_tokens": out}
        return JSONResponse(resp)

    # ---- admin API -----------------------------------------------------------------------------------
    async def _faults_api(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_faults()
        elif request.method == "POST":
            data = await request.json()
            for item in data if isinstance(data, list) else [data]:
                self.add_fault(Fault.model_validate(item))
        return JSONResponse({"faults": [f.model_dump() for f in self.faults]})

    async def _provider_fault_api(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.provider_fault = ProviderFault()
        elif request.method == "PUT":
            self.provider_fault = ProviderFault.model_validate(await request.json())
        return JSONResponse(self.provider_fault.model_dump())

    async def _config_api(self, request: Request) -> Response:
        self.timing = Timing.model_validate(await request.json())
        return JSONResponse(self.timing.model_dump())

    async def _stats_api(self, _: Request) -> Response:
        return JSONResponse(self.stats.as_dict())

    async def _reset_api(self, _: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible / Anthropic provider for tests and benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=0, help="answer with this many word tokens (0: default text)")
    args = parser.parse_args()
    timing = Timing(ttft_s=args.ttft_ms / 1000, token_interval_s=args.token_interval_ms / 1000)
    if args.tokens > 0:
        timing.text = " ".join(f"word{i}" for i in range(args.tokens))
    fake = FakeProvider(args.host, args.port, timing)

    async def run() -> None:
        await fake.start()
        print(f"fake provider listening on {fake.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run())


if __name__ == "__main__":
    main()
