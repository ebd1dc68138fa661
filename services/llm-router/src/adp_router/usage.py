"""Usage of one LLM call: what its record reports (`Track`), the tokens charged for an attempt, and the
record's publication on the USAGE stream (de-duplicated by request id; a usage record is what charges a
call, so publishing is retried)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from adp_common.bus import Bus
from adp_common.retry import Backoff
from adp_common.schemas.llm import CompletionRequest, UsageRecord
from adp_router.providers import CallState
from adp_router.simulated_text import estimate_tokens

log = logging.getLogger("adp.router")

USAGE_PUBLISH_RETRY = Backoff(initial_s=0.2, max_s=0.4, attempts=3)  # a usage record is what charges a call


@dataclass
class Track:
    """What the usage record of one call reports (the last attempted provider when it fails)."""

    provider: str = "none"
    model: str = "none"
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    ttft_ms: float | None = None
    attempts: int = 0


def account(track: Track, req: CompletionRequest, st: CallState, parts: list[str], *, failed: bool) -> None:
    """Usage of the latest attempt: the provider's figures, else an estimate (chars/4) marked estimated.
    Failed attempts that streamed nothing cost nothing."""
    if failed and not parts and st.input_tokens is None:
        track.input_tokens = track.output_tokens = 0
        track.estimated = False
        return
    est = False
    if st.input_tokens is not None:
        track.input_tokens = st.input_tokens
    else:
        track.input_tokens = sum(estimate_tokens(m.content) + 4 for m in req.messages)
        est = True
    if st.output_tokens is not None and not failed:
        track.output_tokens = st.output_tokens
    else:
        track.output_tokens = estimate_tokens("".join(parts))
        est = est or bool(parts)
    track.estimated = est


def usage_record(req: CompletionRequest, track: Track, latency_ms: float, error: str | None) -> UsageRecord:
    return UsageRecord(
        request_id=req.request_id,
        user_id=req.user_id,
        key_id=req.key_id,
        discussion_id=req.discussion_id,
        persona=req.persona,
        route=req.route,
        provider=track.provider,
        model=track.model,
        input_tokens=track.input_tokens,
        output_tokens=track.output_tokens,
        estimated=track.estimated,
        latency_ms=round(latency_ms, 3),
        ttft_ms=track.ttft_ms,
        status="error" if error else "ok",
        error_code=error,
    )


async def publish_usage(bus: Bus, request_id: str, rec: UsageRecord) -> None:
    for tries in range(1, USAGE_PUBLISH_RETRY.attempts + 1):
        try:
            await bus.publish_event(bus.catalog.usage_record, rec, msg_id=request_id, timeout=3)
            return
        except Exception as err:
            if tries == USAGE_PUBLISH_RETRY.attempts:
                log.error("usage record %s not published: %s", request_id, err)
                return
            with contextlib.suppress(asyncio.CancelledError):  # a cancelled call is still charged
                await asyncio.sleep(USAGE_PUBLISH_RETRY.pause(tries))
