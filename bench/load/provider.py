"""The fake provider for the load benchmark: `adp_testing.fake_provider.FakeProvider` whose every token
carries the wall-clock time (µs since the epoch) at which the provider emitted it, so a client anywhere
downstream can compute the chunk's delivery latency.

Tokens look like `ts1712345678123456 `; the last one ends with `.` so the dialogue service sees a
complete sentence (no continuation call). Run as a script (the benchmark starts it as its own process):

    .venv/bin/python bench/load/provider.py --port 8099 --ttft-ms 200 --tokens-per-s 30 --tokens 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator

from adp_testing.fake_provider import FakeProvider, Fault, Timing

STAMP = re.compile(rb"ts(\d{16})")


def stamp_token(last: bool) -> str:
    return f"ts{time.time_ns() // 1000}" + ("." if last else " ")


def stamps(data: bytes) -> list[int]:
    """Emission times (µs since the epoch) of every stamped token in `data`."""
    return [int(m) for m in STAMP.findall(data)]


class StampedProvider(FakeProvider):
    """Streams `tokens` stamped tokens: TTFT `ttft_s` (± `jitter` fraction), then one every `token_interval_s`."""

    def __init__(self, host: str, port: int, timing: Timing, tokens: int, jitter: float = 0.0) -> None:
        super().__init__(host, port, timing)
        self.tokens = tokens
        self.jitter = jitter
        # Non-streaming answers (and usage figures) use the text: keep its token count right.
        self.timing.text = " ".join(f"ts{0:016d}" for _ in range(tokens)) + "."

    def _jittered(self, value: float) -> float:
        if not self.jitter or not value:
            return value
        return value * random.uniform(1 - self.jitter, 1 + self.jitter)

    async def _token_stream(self, fault: Fault | None) -> AsyncIterator[tuple[int, str]]:
        t = self.timing
        if t.ttft_s:
            await asyncio.sleep(self._jittered(t.ttft_s))
        # Pace against a schedule (not sleep-after-sleep) so event-loop lag does not slow the token rate.
        start = time.monotonic()
        for i in range(self.tokens):
            if i and t.token_interval_s:
                delay = start + i * t.token_interval_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield i, stamp_token(i == self.tokens - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=200.0)
    ap.add_argument("--tokens-per-s", type=float, default=30.0)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--jitter", type=float, default=0.0, help="± fraction applied to the TTFT")
    args = ap.parse_args()
    timing = Timing(ttft_s=args.ttft_ms / 1000, token_interval_s=1 / args.tokens_per_s)
    fake = StampedProvider(args.host, args.port, timing, args.tokens, args.jitter)
    fake.max_bodies = 0

    async def run() -> None:
        await fake.start()
        print(f"stamped fake provider on {fake.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
