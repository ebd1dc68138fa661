"""This copy's in-flight LLM calls, by discussion and by request id, so that a stopped discussion's calls, one
call, or a call whose caller is gone can be cancelled (the provider connection closes at once)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from adp_common.errors import ErrorCode, PlatformError
from adp_common.schemas.llm import CompletionRequest, CompletionResult
from adp_router.metrics import RouterMetrics

log = logging.getLogger("adp.router")


class InFlight:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self.by_discussion: dict[str, set[asyncio.Task[Any]]] = {}
        self.by_request: dict[str, asyncio.Task[Any]] = {}
        self._reasons: dict[asyncio.Task[Any], str] = {}  # why each task cancelled by `_cancel` was
        self.orphaned: set[str] = set()  # request ids cancelled because their caller was gone

    async def run(self, req: CompletionRequest, call: Coroutine[Any, Any, CompletionResult]) -> CompletionResult:
        """Run a call so that `cancel_discussion` (a discussion's calls) and `cancel_request` (one call) can
        stop it: it then ends as a CONFLICT error, and its usage so far is recorded like any failed call's
        (what the provider streamed is charged)."""
        task = asyncio.current_task()
        if task is None:
            return await call
        # The caller's own task is what gets cancelled: a task of its own for the call would cost one more
        # turn of the event loop before the provider request leaves (time to first token).
        did = req.discussion_id or ""
        calls = self.by_discussion.setdefault(did, set()) if did else None
        if calls is not None:
            calls.add(task)
        self.by_request[req.request_id] = task
        try:
            return await call
        except asyncio.CancelledError:
            reason = self._reasons.pop(task, None)
            if reason is None or task.uncancel() > 0:  # cancelled by someone else too (shutdown): give up
                raise
            raise PlatformError(ErrorCode.CONFLICT, f"call cancelled: {reason}") from None
        finally:
            if calls is not None:
                calls.discard(task)
                if not calls:
                    self.by_discussion.pop(did, None)
            if self.by_request.get(req.request_id) is task:
                del self.by_request[req.request_id]
            self._reasons.pop(task, None)

    def cancel_discussion(self, discussion_id: str, reason: str) -> int:
        """Cancel this copy's in-flight calls of a discussion (the provider connection closes at once, so
        the provider stops generating); the number cancelled."""
        return self._cancel(list(self.by_discussion.get(discussion_id, ())), f"of discussion {discussion_id}", reason)

    def cancel_request(self, request_id: str, reason: str) -> int:
        """Cancel this copy's in-flight call with this request id, if it has one; the number cancelled."""
        task = self.by_request.get(request_id)
        return self._cancel([task] if task is not None else [], f"with request id {request_id}", reason)

    def cancel_orphan(self, request_id: str, reason: str) -> int:
        """Cancel a call whose caller is gone: what streamed is charged, and the caller's next attempt at
        the same logical call runs it afresh rather than failing with this call's error."""
        if request_id in self.by_request:
            self.orphaned.add(request_id)
        return self.cancel_request(request_id, reason)

    def _cancel(self, tasks: list[asyncio.Task[Any]], what: str, reason: str) -> int:
        tasks = [t for t in tasks if not t.done()]
        for task in tasks:
            self._reasons[task] = reason
            task.cancel()
        if tasks:
            self.metrics.cancelled.inc(len(tasks))
            log.info("cancelled %d call(s) %s: %s", len(tasks), what, reason)
        return len(tasks)
