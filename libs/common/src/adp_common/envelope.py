"""The envelope every durable fact on the bus travels in, and the typed registry of event types."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

P = TypeVar("P", bound=BaseModel)

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Envelope(BaseModel, Generic[P]):
    """Wraps a payload with identity, type, time, origin, trace context and schema version."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(default_factory=new_id, description="Unique message id; also the Nats-Msg-Id")
    type: str = Field(description="Event type name, e.g. 'usage.recorded'")
    time: datetime = Field(default_factory=utcnow)
    schema_version: int = SCHEMA_VERSION
    source: str = Field(default="", description="service/instance that produced it")
    traceparent: str | None = Field(default=None, description="W3C trace context of the producer")
    payload: P


# type name -> payload model, filled by the schema modules (used for decoding and AsyncAPI).
EVENT_TYPES: dict[str, type[BaseModel]] = {}


def event_type(name: str) -> Callable[[type[P]], type[P]]:
    """Class decorator: register a payload model under an event type name."""

    def wrap(cls: type[P]) -> type[P]:
        if name in EVENT_TYPES and EVENT_TYPES[name] is not cls:
            raise ValueError(f"event type {name!r} registered twice")
        EVENT_TYPES[name] = cls
        cls.__event_type__ = name  # type: ignore[attr-defined]  # a class attribute, not a pydantic field
        return cls

    return wrap


def type_of(payload: BaseModel) -> str:
    name = getattr(type(payload), "__event_type__", None)
    if name is None:
        raise TypeError(f"{type(payload).__name__} is not a registered event payload")
    return str(name)


# Parametrized envelope classes, held here: pydantic caches `Envelope[X]` only weakly, so without a strong
# reference the class would be rebuilt (milliseconds of schema building) for most messages under load.
_ENVELOPES: dict[Any, type[Envelope[Any]]] = {}


def envelope_of(payload_type: Any) -> type[Envelope[Any]]:
    cls = _ENVELOPES.get(payload_type)
    if cls is None:
        cls = _ENVELOPES[payload_type] = Envelope[payload_type]
    return cls


def wrap(
    payload: BaseModel, *, source: str = "", traceparent: str | None = None, id: str | None = None
) -> Envelope[Any]:
    env = envelope_of(type(payload))(type=type_of(payload), source=source, traceparent=traceparent, payload=payload)
    if id is not None:
        env.id = id
    return env


def decode(data: bytes | str | dict[str, Any]) -> Envelope[Any]:
    """Parse an envelope and its payload by the registered type (unknown types keep a dict payload)."""
    raw = data if isinstance(data, dict) else json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("an envelope is a JSON object")
    kind = raw.get("type")
    model = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    return envelope_of(Any if model is None else model).model_validate(raw)
