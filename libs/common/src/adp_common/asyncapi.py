"""Generate the AsyncAPI 3.0 document of the bus from the catalog and the pydantic schemas.

`python -m adp_common.asyncapi > docs/asyncapi.json` regenerates it; a test checks the committed file
equals what the code generates, so the document cannot drift from the messages really exchanged.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from adp_common.catalog import KV_BUCKETS, STREAMS, Catalog
from adp_common.envelope import Envelope
from adp_common.schemas import alerts, common, cost, dialogue, llm, ops


@dataclass(frozen=True)
class Channel:
    address: str
    description: str
    messages: tuple[type[BaseModel], ...]
    kind: Literal["request", "event", "stream", "core"]
    replies: tuple[type[BaseModel], ...] = ()
    stream: str | None = None
    params: tuple[str, ...] = ()


def channels(cat: Catalog) -> list[Channel]:
    d = "{discussionId}"
    return [
        Channel(
            cat.health("{service}"),
            "Health of a service (queue group: any copy answers)",
            (common.Empty,),
            "request",
            (common.HealthReply,),
            params=("service",),
        ),
        Channel(
            cat.llm_complete,
            "Run one LLM completion (llm-router); chunks go to the stream subject",
            (llm.CompletionRequest,),
            "request",
            (llm.CompletionResult,),
        ),
        Channel(
            cat.llm_stream("{requestId}"),
            "Token chunks of one streaming completion (core NATS)",
            (llm.CompletionChunk,),
            "core",
            params=("requestId",),
        ),
        Channel(
            cat.llm_call_owner("{instance}"),
            "Ask the router copy that claimed a logical call (call_key) whether it still runs it",
            (llm.CallOwnerQuery,),
            "request",
            (llm.CallOwnerReply,),
            params=("instance",),
        ),
        Channel(
            cat.llm_cancel,
            "Cancel the in-flight calls of a discussion on every router copy (core NATS, no queue group)",
            (llm.CancelCalls,),
            "core",
        ),
        Channel(
            cat.key_revoked,
            "An API key was revoked: every gateway copy drops it from its key cache (core NATS, no queue group)",
            (common.KeyRevoked,),
            "core",
        ),
        Channel(
            cat.sessions_ended,
            "A key was revoked or a user disabled: every gateway copy closes its SSE streams and Socket.IO "
            "connections (core NATS, no queue group)",
            (common.SessionsEnded,),
            "core",
        ),
        Channel(cat.llm_models, "Models the router serves", (common.Empty,), "request", (llm.ModelList,)),
        Channel(
            cat.llm_providers,
            "Provider availability, breakers, success rate, latency",
            (common.Empty,),
            "request",
            (llm.ProviderStatusList,),
        ),
        Channel(
            cat.dialogue_command,
            "Discussion commands from the gateway",
            (dialogue.DialogueCommand,),
            "request",
            (dialogue.DiscussionView,),
        ),
        Channel(
            cat.dialogue_query,
            "Discussion queries (list, get, head, events after a seq, export, active count)",
            (dialogue.DialogueQuery,),
            "request",
            (
                dialogue.DiscussionView,
                dialogue.DiscussionList,
                dialogue.EventsReply,
                dialogue.ExportReply,
                dialogue.CountReply,
            ),
        ),
        Channel(
            cat.dialogue_work(d),
            "Discussion steps (work queue shared by dialogue copies)",
            (dialogue.DialogueJob,),
            "stream",
            stream="DIALOGUE_WORK",
            params=("discussionId",),
        ),
        Channel(
            cat.discussion_events(d),
            "Durable discussion events (contract names; seq = SSE id)",
            (dialogue.DiscussionEvent,),
            "stream",
            stream="DISCUSSIONS",
            params=("discussionId",),
        ),
        Channel(
            cat.discussion_chunks(d),
            "message-chunk events (core NATS, not stored)",
            (dialogue.DiscussionEvent,),
            "core",
            params=("discussionId",),
        ),
        Channel(cat.usage_record, "One usage record per LLM call", (llm.UsageRecord,), "stream", stream="USAGE"),
        Channel(cat.cost_query, "Cost breakdowns and budget", (cost.CostQuery,), "request", (cost.CostSummary,)),
        Channel(cat.cost_budget_set, "Set a daily budget", (cost.SetBudget,), "request", (cost.BudgetState,)),
        Channel(cat.alerts_query, "Alert queries", (alerts.AlertQuery,), "request", (alerts.AlertList,)),
        Channel(cat.alerts_ack, "Acknowledge an alert", (alerts.AckAlert,), "request", (alerts.AlertEvent,)),
        Channel(
            cat.alert_event("{state}"),
            "Alert fired / resolved / acknowledged",
            (alerts.AlertEvent,),
            "stream",
            stream="ALERTS",
            params=("state",),
        ),
        Channel(
            cat.ops("request-stats"), "Gateway request outcome windows", (ops.RequestStats,), "stream", stream="OPS"
        ),
        Channel(cat.ops("provider-health"), "Provider health", (ops.ProviderHealthEvent,), "stream", stream="OPS"),
        Channel(cat.ops("breaker"), "Circuit breaker changes", (ops.BreakerChange,), "stream", stream="OPS"),
        Channel(cat.ops("budget"), "Budget threshold/exceeded, once a day", (ops.BudgetEvent,), "stream", stream="OPS"),
        Channel(cat.ops("heartbeat"), "Service heartbeats and resources", (ops.Heartbeat,), "stream", stream="OPS"),
    ]


def _key(address: str) -> str:
    return address.replace(".", "_").replace("{", "").replace("}", "").replace("-", "_")


def _schemas(chans: list[Channel]) -> dict[str, Any]:
    """JSON schemas of every message and reply model (and the Envelope), by name."""
    models: list[type[BaseModel]] = []
    for ch in chans:
        for m in (*ch.messages, *ch.replies):
            if m not in models:
                models.append(m)
    _, top = models_json_schema(
        [(m, "validation") for m in models] + [(Envelope, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(top.get("$defs", {}).items()))


def _message_refs(ch: Channel, messages: dict[str, Any]) -> dict[str, Any]:
    """The channel's messages, added to `messages` (a stream's wrapped in its Envelope); their references."""
    refs = {}
    for m in ch.messages:
        name = m.__name__
        payload: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
        if ch.kind == "stream":
            payload = {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {"type": "object", "properties": {"payload": {"$ref": f"#/components/schemas/{name}"}}},
                ]
            }
            name = f"{name}Envelope"
        messages[name] = {"name": name, "payload": payload}
        refs[name] = {"$ref": f"#/components/messages/{name}"}
    return refs


def _reply_refs(ch: Channel, messages: dict[str, Any]) -> dict[str, Any]:
    refs = {}
    for r in ch.replies:
        messages.setdefault(r.__name__, {"name": r.__name__, "payload": {"$ref": f"#/components/schemas/{r.__name__}"}})
        refs[r.__name__] = {"$ref": f"#/components/messages/{r.__name__}"}
    return refs


def generate(prefix: str = "adp") -> dict[str, Any]:
    cat = Catalog(prefix)
    chans = channels(cat)
    doc_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for ch in chans:
        key = _key(ch.address)
        channel: dict[str, Any] = {
            "address": ch.address,
            "description": ch.description,
            "messages": _message_refs(ch, messages),
        }
        if ch.params:
            channel["parameters"] = {p: {"description": p} for p in ch.params}
        if ch.stream:
            channel["x-jetstream-stream"] = cat.stream_name(ch.stream)
        doc_channels[key] = channel
        op: dict[str, Any] = {"action": "send", "channel": {"$ref": f"#/channels/{key}"}}
        if ch.replies:
            reply_key = f"{key}_reply"
            doc_channels[reply_key] = {
                "address": None,
                "description": "reply inbox",
                "messages": _reply_refs(ch, messages),
            }
            op["reply"] = {"channel": {"$ref": f"#/channels/{reply_key}"}}
        operations[f"{ch.kind}_{key}"] = op
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "AI Dialogue Platform bus",
            "version": "1.0.0",
            "description": (
                "Subjects shown for the default prefix 'adp'. Request channels use NATS request/reply with "
                "queue groups (NATS services protocol); errors come back with headers Nats-Service-Error-Code "
                "(contract code) and Nats-Service-Error, body {code, message}. Stream channels are JetStream "
                "(Nats-Msg-Id de-duplication). Streams: "
                + ", ".join(f"{cat.stream_name(s.name)} ({s.retention})" for s in STREAMS)
                + ". KV buckets: "
                + ", ".join(cat.bucket(b) for b in KV_BUCKETS)
                + "."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "127.0.0.1:4222", "protocol": "nats"}},
        "channels": doc_channels,
        "operations": operations,
        "components": {"messages": dict(sorted(messages.items())), "schemas": _schemas(chans)},
    }


def render(prefix: str = "adp") -> str:
    return json.dumps(generate(prefix), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
