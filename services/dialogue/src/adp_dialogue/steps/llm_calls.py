"""A step's LLM calls: the request (ids that make a redelivered step get the first delivery's answer) and a
full answer, continued while it is cut off."""

from __future__ import annotations

from typing import Any

from adp_common.bus import Bus
from adp_common.llm_client import LLMClient
from adp_common.schemas.dialogue import DialogueJob, DiscussionEvent
from adp_common.schemas.llm import ChatMessage, CompletionRequest
from adp_dialogue.domain import policy, prompts
from adp_dialogue.domain.text import estimate_tokens
from adp_dialogue.rows import DiscussionRow
from adp_dialogue.settings import DialogueSettings


class StepCalls:
    def __init__(self, settings: DialogueSettings, bus: Bus) -> None:
        self.s = settings
        self.bus = bus
        self.llm = LLMClient(bus)

    def request(
        self,
        job: DialogueJob,
        d: DiscussionRow,
        num_delivered: int,
        messages: list[ChatMessage],
        *,
        route: str,
        persona: str,
        task: str,
        n: int = 0,
        max_tokens: int | None = None,
    ) -> CompletionRequest:
        retry = job.data.get("retry", 0)
        suffix = f":c{n}" if n else ""
        return CompletionRequest(
            request_id=f"{d.id}:{job.step_key}:{retry}.{num_delivered}{suffix}",
            # the same for every delivery of the step: a redelivered step gets the first one's answer
            call_key=f"{d.id}:{job.step_key}:{retry}:{task}{suffix}",
            fresh=num_delivered == 1,
            messages=messages,
            route=route,
            persona=persona,
            user_id=d.user_id,
            key_id=d.key_id,
            discussion_id=d.id,
            task=task,
            round=job.round,
            max_tokens=max_tokens,
            timeout_s=self.s.llm_timeout_s,
        )

    async def complete_full(
        self,
        job: DialogueJob,
        d: DiscussionRow,
        num_delivered: int,
        base: list[ChatMessage],
        *,
        route: str,
        persona: str,
        task: str,
        chunk_data: dict[str, Any] | None = None,
    ) -> tuple[str, str, str, int, int]:
        """One answer, continued (task 'continue') while it is cut off. -> text, provider, model, in, out.

        With `chunk_data` the answer streams live: the router publishes each chunk straight to the
        discussion's chunk subject as a `message-chunk` event carrying `chunk_data` (no hop through here)."""
        relay: dict[str, Any] = {}
        if chunk_data is not None:
            template = DiscussionEvent(discussionId=d.id, seq=0, event="message-chunk", data=chunk_data)
            relay = {
                "relay_subject": self.bus.catalog.discussion_chunks(d.id),
                "relay_template": template.model_dump(mode="json"),
            }
        req = self.request(
            job, d, num_delivered, base, route=route, persona=persona, task=task, max_tokens=self.s.turn_max_tokens
        ).model_copy(update=relay)
        res = await self.llm.complete(req)
        text, tin, tout = res.text, res.usage.input_tokens, res.usage.output_tokens
        n = 0
        while policy.needs_continuation(text, res.finish_reason) and n < self.s.max_continuations:
            n += 1
            req = self.request(
                job,
                d,
                num_delivered,
                prompts.continue_messages(base, text),
                route=route,
                persona=persona,
                task="continue",
                n=n,
                max_tokens=self.s.turn_max_tokens,
            ).model_copy(update=relay)
            res = await self.llm.complete(req)
            text = policy.join_continuation(text, res.text)
            tin += res.usage.input_tokens
            tout += res.usage.output_tokens
        return text.strip(), res.provider, res.model, tin, tout or estimate_tokens(text)
