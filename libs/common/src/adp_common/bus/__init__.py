"""A thin bus over nats-py: request/reply with queue groups (NATS services protocol), core pub/sub,
JetStream streams with de-duplicated publish, durable pull consumers with bounded concurrency, and KV.

Trace context travels in message headers on every hop. See docs/architecture.md for why this is a thin
wrapper and not FastStream (measured there). One module a concern: `connection` (connect, close, shared
state), `requests` (request/reply, endpoints), `pubsub` (core NATS, notices), `jetstream` and `consumer`
(streams, publishing, durable consumers), `kv` (buckets), `replicas` (the start-up error for more replicas
than the servers hold), `wire` (headers, encoding, error replies), and `nats_internals` (every use of
nats-py's private fields, with its public-API fallback).
"""

from __future__ import annotations

from adp_common.bus.connection import BusConnection, server_urls, wait_for
from adp_common.bus.consumer import Consumer, ConsumerHandler, Delivery, Reject, Retry
from adp_common.bus.jetstream import JetStream, answered
from adp_common.bus.kv import KeyValueBuckets, KVWatch
from adp_common.bus.nats_internals import send_now
from adp_common.bus.pubsub import PubSub
from adp_common.bus.replicas import ReplicasUnavailable
from adp_common.bus.requests import HANDLER_BACKLOG_LIMIT, Handler, RequestReply
from adp_common.bus.wire import (
    CORRELATION_HEADER,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MSG_ID_HEADER,
    RequestContext,
    decode_reply,
)


class Bus(RequestReply, PubSub, JetStream, KeyValueBuckets, BusConnection):
    """One process's connection to the platform's bus; `Bus.connect(url, prefix=..., name=...)`."""


__all__ = [
    "CORRELATION_HEADER",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "HANDLER_BACKLOG_LIMIT",
    "MSG_ID_HEADER",
    "Bus",
    "Consumer",
    "ConsumerHandler",
    "Delivery",
    "Handler",
    "KVWatch",
    "Reject",
    "ReplicasUnavailable",
    "RequestContext",
    "Retry",
    "answered",
    "decode_reply",
    "send_now",
    "server_urls",
    "wait_for",
]
