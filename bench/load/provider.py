"""The fake provider for the load benchmark: an OpenAI-compatible chat-completions server whose tokens carry
the wall-clock time (µs since the epoch) at which the provider emitted them, so a client anywhere downstream
can compute the chunk's delivery latency.

The first token, every `STAMP_EVERY`-th one and the last look like `ts1712345678123456 `; the others are
short words (`the `, `of `, …), so an answer is about the size of a real one (~6 characters a token) rather
than ~19 characters a token, which made every prompt, stored message and event ~4x larger than real ones.
A stream's first token also carries when the provider had the whole request (`ts…rq1712345678100000 `, see
`arrival`).
Every token ends with a space, the last with `.` so the dialogue service sees a complete sentence (no
continuation call); `token_count` counts the tokens in a chunk. Run as a script (the benchmark starts it
as its own process):

    .venv/bin/python bench/load/provider.py --port 8099 --ttft-ms 200 --tokens-per-s 30 --tokens 40

It shares the machine with what it measures, so it is written to cost little per token: a bare asyncio
protocol (httptools parses requests) and one timer callback per token writing one pre-formatted SSE event,
instead of the test suite's `adp_testing.fake_provider` (Starlette, a generator and a task per stream), which
needed ~4x the CPU per token — at 500 streams of 30 tokens/s that was most of a core taken from the platform.
It speaks only what the benchmark uses: POST /v1/chat/completions (streamed or not, `stream_options.
include_usage`, `max_tokens` cutting the answer short) and GET /_stats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import httptools

from adp_common.net import listening_socket
from adp_common.service import run_loop

STAMP = re.compile(rb"ts(\d{16})")
ARRIVED = re.compile(rb"ts\d{16}rq(\d{16})")
TEXT = re.compile(rb'"(?:chunk|content)":"([^"]*)"')
STAMP_EVERY = 5  # a chunk of a 200–300 ms tick (6–9 tokens at 30/s) always holds at least one stamp
WORDS = ("the ", "of ", "and ", "to ", "in ", "is ", "it ", "a ")


def stamp_token(last: bool, arrived_us: int | None = None) -> str:
    rq = "" if arrived_us is None else f"rq{arrived_us}"
    return f"ts{time.time_ns() // 1000}{rq}" + ("." if last else " ")


def token(i: int, last: bool, arrived_us: int | None = None, stamp_every: int = STAMP_EVERY) -> str:
    """Token `i` of an answer: stamped (the first, every `stamp_every`-th, the last) or a short word. The first
    token of a stream also carries `arrived_us`, when the provider had the whole request (see `arrival`)."""
    if last or i % stamp_every == 0:
        return stamp_token(last, arrived_us if i == 0 else None)
    return WORDS[i % len(WORDS)]


def stamps(data: bytes) -> list[int]:
    """Emission times (µs since the epoch) of every stamped token in `data`."""
    return [int(m) for m in STAMP.findall(data)]


def arrival(data: bytes) -> int | None:
    """When the provider had the whole request (µs since the epoch), from a stream's first token in `data`:
    splits a time to first token into the way to the provider and the provider's own wait."""
    m = ARRIVED.search(data)
    return int(m.group(1)) if m else None


def token_count(data: bytes) -> int:
    """Tokens in the text of an SSE data payload (a relayed chunk's `chunk` or a provider event's `content`):
    every token ends with a space or, the last, with a full stop."""
    return sum(t.count(b" ") + t.count(b".") for t in TEXT.findall(data))


@dataclass
class Config:
    ttft_s: float
    token_interval_s: float
    tokens: int
    jitter: float = 0.0  # ± fraction applied to the TTFT
    stamp_every: int = STAMP_EVERY  # 1: every token carries its emission time

    def ttft(self) -> float:
        if not self.jitter:
            return self.ttft_s
        return self.ttft_s * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass
class Stats:
    calls: int = 0
    completed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked HTTP body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj_json: str) -> bytes:
    return _chunk(b"data: " + obj_json.encode() + b"\n\n")


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class Stream:
    """One streamed answer: a timer callback per token, paced against a schedule (not sleep after sleep) so
    event-loop lag does not slow the token rate."""

    def __init__(self, conn: Connection, body: dict[str, Any]) -> None:
        self.arrived_us = time.time_ns() // 1000
        self.conn = conn
        cfg = conn.server.config
        self.cfg = cfg
        model = str(body.get("model", "fake-model"))
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())
        self.head = f'{{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":{json.dumps(model)},'
        self.input_tokens = _prompt_tokens(body)
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.tokens = _answer_tokens(cfg, body)
        self.i = 0
        self.start = 0.0
        self.loop = asyncio.get_running_loop()
        conn.write(_SSE_HEAD + _event(self.head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'))
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(cfg.ttft(), self._token)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _token(self) -> None:
        cfg, i = self.cfg, self.i
        if i == 0:
            self.start = self.loop.time()
        last = i == self.tokens - 1
        tok = token(i, last, self.arrived_us, cfg.stamp_every)
        out = _event(self.head + f'"choices":[{{"index":0,"delta":{{"content":"{tok}"}},"finish_reason":null}}]}}')
        self.i += 1
        if not last:
            self.conn.write(out)
            self.timer = self.loop.call_at(self.start + self.i * cfg.token_interval_s, self._token)
            return
        self.timer = None
        out += _event(self.head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        stats = self.conn.server.stats
        stats.completed += 1
        if self.include_usage:
            n_in, n_out = self.input_tokens, self.tokens
            usage = f'"usage":{{"prompt_tokens":{n_in},"completion_tokens":{n_out},"total_tokens":{n_in + n_out}}}'
            out += _event(self.head + '"choices":[],' + usage + "}")
            stats.input_tokens += n_in
            stats.output_tokens += n_out
        out += _event("[DONE]") + b"0\r\n\r\n"
        self.conn.write(out)
        self.conn.response_done()


def _answer_tokens(cfg: Config, body: dict[str, Any]) -> int:
    """The configured answer length, cut to the request's max_tokens as a real provider would."""
    limit = body.get("max_tokens")
    return max(1, min(cfg.tokens, limit)) if isinstance(limit, int) and limit > 0 else cfg.tokens


def _prompt_tokens(body: dict[str, Any]) -> int:
    msgs = body.get("messages") or []
    return max(1, sum(len(str(m.get("content", ""))) for m in msgs if isinstance(m, dict)) // 4)


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


class Connection(asyncio.Protocol):
    """One client connection (keep-alive: requests one after another, no pipelining)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.pending: Stream | asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # a TCP transport (uvloop's is not an asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_response("400 Bad Request", b'{"error":{"message":"bad request"}}'))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method, path = self.parser.get_method(), self.url.split(b"?", 1)[0]
        if method == b"GET" and path == b"/_stats":
            self.write(_response("200 OK", json.dumps(asdict(self.server.stats)).encode()))
        elif method == b"POST" and path == b"/v1/chat/completions":
            self._completion()
        else:
            self.write(_response("404 Not Found", b'{"error":{"message":"not found"}}'))

    # helpers
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def response_done(self) -> None:
        self.pending = None
        if not self.parser.should_keep_alive():
            self.close()

    def _completion(self) -> None:
        try:
            body = json.loads(b"".join(self.body))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self.write(_response("400 Bad Request", b'{"error":{"message":"invalid JSON body"}}'))
            return
        self.server.stats.calls += 1
        if body.get("stream"):
            self.pending = Stream(self, body)
            return
        cfg = self.server.config
        n_out = _answer_tokens(cfg, body)
        text = "".join(token(i, i == n_out - 1) for i in range(n_out))
        n_in = _prompt_tokens(body)
        answer = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "fake-model")),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        }

        def send() -> None:
            self.server.stats.completed += 1
            self.server.stats.input_tokens += n_in
            self.server.stats.output_tokens += n_out
            self.write(_response("200 OK", json.dumps(answer).encode()))
            self.response_done()

        self.pending = asyncio.get_running_loop().call_later(cfg.ttft(), send)


class FakeServer:
    def __init__(self, host: str, port: int, config: Config) -> None:
        self.host, self.port, self.config = host, port, config
        self.stats = Stats()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        sock = listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=4096)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=200.0)
    ap.add_argument("--tokens-per-s", type=float, default=30.0)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--jitter", type=float, default=0.0, help="± fraction applied to the TTFT")
    ap.add_argument("--stamp-every", type=int, default=STAMP_EVERY, help="1: every token carries its emission time")
    args = ap.parse_args()
    config = Config(args.ttft_ms / 1000, 1 / args.tokens_per_s, args.tokens, args.jitter, args.stamp_every)
    fake = FakeServer(args.host, args.port, config)

    async def run() -> None:
        await fake.start()
        print(f"stamped fake provider on {fake.url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run())


if __name__ == "__main__":
    main()
