"""The slow-operation log: one line per bus call over ADP_SLOW_OPERATION_MS, with the caller's correlation id."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from pydantic import BaseModel

from adp_common.bus import Bus, RequestContext
from adp_common.logging import JsonFormatter, correlation_id, log_slow, set_slow_threshold, slow_log


class Q(BaseModel):
    wait_s: float = 0.0


async def test_slow_bus_calls_are_logged_with_the_callers_correlation_id(bus: Bus, nats_url: str, prefix: str) -> None:
    server = await Bus.connect(nats_url, prefix=prefix, name="svc")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("svc"))
    slow_log.addHandler(handler)
    set_slow_threshold(50)
    try:

        async def handle(req: Q, ctx: RequestContext) -> Q:
            await asyncio.sleep(req.wait_s)
            return req

        subject = bus.catalog.subject("svc", "slow")
        await server.serve(subject, handle, Q, name="slow-op")
        token = correlation_id.set("corr-slow-1")
        try:
            await bus.request(subject, Q(wait_s=0.0))
            await bus.request(subject, Q(wait_s=0.12))
        finally:
            correlation_id.reset(token)
    finally:
        set_slow_threshold(2000)
        slow_log.removeHandler(handler)
        await server.close(grace=1)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 1, lines  # the fast call is not logged
    assert lines[0]["kind"] == "bus" and lines[0]["operation"] == "slow-op"
    assert lines[0]["correlation_id"] == "corr-slow-1" and lines[0]["duration_ms"] >= 120


def test_threshold_zero_turns_the_log_off() -> None:
    set_slow_threshold(0)
    try:
        assert not log_slow("llm", "p/m", 999.0)
    finally:
        set_slow_threshold(2000)
    assert log_slow("llm", "p/m", 2.5) and not log_slow("llm", "p/m", 1.0)
