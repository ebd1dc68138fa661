"""Subject, stream and KV-bucket catalog: the one place that names what travels where.

Every name is derived from the subject prefix (`ADP_SUBJECT_PREFIX`, default `adp`) so test runs and
separate deployments sharing one NATS server never see each other's traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream; `name` and `subjects` are relative to the prefix (see Catalog.stream)."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    max_age_s: float = 7 * 24 * 3600
    duplicate_window_s: float = 120.0
    max_msgs: int = -1
    description: str = ""


@dataclass(frozen=True)
class Catalog:
    prefix: str = "adp"
    _p: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_p", self.prefix)

    # ---- naming helpers -------------------------------------------------------------------------
    def subject(self, *parts: str) -> str:
        return ".".join((self._p, *parts))

    def stream_name(self, base: str) -> str:
        return f"{self._p.upper().replace('-', '_')}_{base}"

    def bucket(self, base: str) -> str:
        return f"{self._p.lower().replace('-', '_')}_{base}"

    def stream(self, spec: StreamSpec) -> StreamSpec:
        """The spec with prefixed stream name and subjects."""
        return StreamSpec(
            name=self.stream_name(spec.name),
            subjects=tuple(self.subject(s) for s in spec.subjects),
            retention=spec.retention,
            max_age_s=spec.max_age_s,
            duplicate_window_s=spec.duplicate_window_s,
            max_msgs=spec.max_msgs,
            description=spec.description,
        )

    # ---- request/reply (NATS services protocol endpoints, queue group = service name) -----------
    def health(self, service: str) -> str:
        return self.subject(service, "health")

    # llm-router
    @property
    def llm_complete(self) -> str:
        return self.subject("llm", "complete")

    @property
    def llm_models(self) -> str:
        return self.subject("llm", "models")

    @property
    def llm_providers(self) -> str:
        return self.subject("llm", "providers")

    @property
    def llm_cancel(self) -> str:
        """Core-NATS subject every router copy listens on (no queue group): cancel a discussion's calls."""
        return self.subject("llm", "cancel")

    def llm_call_owner(self, instance: str) -> str:
        """Request/reply to one router copy: is it still running a logical call it claimed?"""
        return self.subject("llm", "owner", "".join("_" if c in ".*> \t" else c for c in instance))

    def llm_stream(self, request_id: str) -> str:
        """Core-NATS subject where the router streams a request's chunks."""
        return self.subject("llm", "stream", request_id)

    # dialogue
    @property
    def dialogue_command(self) -> str:
        return self.subject("dialogue", "command")

    @property
    def dialogue_query(self) -> str:
        return self.subject("dialogue", "query")

    def dialogue_work(self, discussion_id: str) -> str:
        return self.subject("dialogue", "work", discussion_id)

    def discussion_events(self, discussion_id: str) -> str:
        """Durable discussion events (JetStream DISCUSSIONS)."""
        return self.subject("discussion", discussion_id, "events")

    def discussion_chunks(self, discussion_id: str) -> str:
        """Token chunks of a discussion (core NATS, not stored)."""
        return self.subject("discussion", discussion_id, "chunks")

    def discussion_all(self, discussion_id: str) -> str:
        """Wildcard a live listener subscribes to: events and chunks, in publication order."""
        return self.subject("discussion", discussion_id, "*")

    # gateway
    @property
    def key_revoked(self) -> str:
        """Core NATS, every gateway copy (no queue group): drop a revoked API key from its lookup cache."""
        return self.subject("gateway", "key-revoked")

    @property
    def sessions_ended(self) -> str:
        """Core NATS, every gateway copy (no queue group): close a key's or a user's live sessions."""
        return self.subject("gateway", "sessions-ended")

    # cost
    @property
    def usage_record(self) -> str:
        return self.subject("usage", "record")

    @property
    def cost_query(self) -> str:
        return self.subject("cost", "query")

    @property
    def cost_budget_set(self) -> str:
        return self.subject("cost", "budget", "set")

    # alerts
    @property
    def alerts_query(self) -> str:
        return self.subject("alerts", "query")

    @property
    def alerts_ack(self) -> str:
        return self.subject("alerts", "ack")

    def alert_event(self, state: str) -> str:
        return self.subject("alerts", "events", state)

    # ops facts (JetStream OPS)
    def ops(self, kind: str) -> str:
        """kind: request-stats | provider-health | breaker | budget | heartbeat | llm-error"""
        return self.subject("ops", kind)

    # ---- streams ----------------------------------------------------------------------------------
    @property
    def streams(self) -> list[StreamSpec]:
        return [self.stream(s) for s in STREAMS]

    def stream_by_base(self, base: str) -> StreamSpec:
        for s in STREAMS:
            if s.name == base:
                return self.stream(s)
        raise KeyError(base)


# Relative specs; Catalog.stream() prefixes them.
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        name="DIALOGUE_WORK",
        subjects=("dialogue.work.>",),
        retention="workqueue",
        description="Discussion steps (one persona turn, a summary, questions); consumed by all dialogue copies",
    ),
    StreamSpec(
        name="DISCUSSIONS",
        subjects=("discussion.*.events",),
        max_age_s=30 * 24 * 3600,
        description="Durable discussion events (contract names); replayed for SSE resume",
    ),
    StreamSpec(
        name="USAGE",
        subjects=("usage.>",),
        max_age_s=14 * 24 * 3600,
        description="One usage record per LLM call (Nats-Msg-Id = request id)",
    ),
    StreamSpec(
        name="OPS",
        subjects=("ops.>",),
        max_age_s=3 * 24 * 3600,
        description="Operational facts: request stats, provider health, breaker changes, budget events, heartbeats",
    ),
    StreamSpec(
        name="ALERTS",
        subjects=("alerts.events.>",),
        max_age_s=30 * 24 * 3600,
        description="Alert firing/resolved/acknowledged events",
    ),
)

# KV buckets (relative names; Catalog.bucket() prefixes them).
KV_BREAKERS = "breakers"  # llm-router: provider -> BreakerState
KV_BUDGET = "budget"  # cost: "global" / "user.<id>" -> BudgetState
KV_LLM_RESULTS = "llm_results"  # llm-router: logical call key (hashed) -> StoredCall, with a TTL
KV_LEASES = "leases"  # alerts and others: leader leases
KV_FAULTS = "faults"  # operators: simulated provider name -> ProviderFault (fault rehearsal)
KV_BUCKETS = (KV_BREAKERS, KV_BUDGET, KV_LLM_RESULTS, KV_LEASES, KV_FAULTS)
