"""What travels on the bus besides the payload: the header names, payload encoding, error replies and the
short form of a validation error that goes into logs and error messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from adp_common.errors import ErrorBody, ErrorCode, PlatformError

M = TypeVar("M", bound=BaseModel)

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
CORRELATION_HEADER = "Adp-Correlation-Id"
MSG_ID_HEADER = "Nats-Msg-Id"
STATUS_HEADER = "Status"  # how nats-py hands over a status message's code
NO_RESPONDERS_STATUS = "503"


@dataclass
class RequestContext:
    subject: str
    headers: dict[str, str]


def encode_payload(payload: BaseModel | dict[str, Any] | bytes | None) -> bytes:
    if payload is None:
        return b"{}"
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, default=str).encode()


def decode_reply(msg: Msg, response_model: type[M] | None) -> Any:
    """A reply's payload (parsed into `response_model` when given); an error reply raises PlatformError
    with the responder's code."""
    if msg.headers and ERROR_CODE_HEADER in msg.headers:
        code = msg.headers.get(ERROR_CODE_HEADER, "INTERNAL_ERROR")
        try:
            body = ErrorBody.model_validate_json(msg.data)
            raise PlatformError(body.code, body.message)
        except ValidationError:
            code = code if code in ErrorCode.__members__ else ErrorCode.INTERNAL_ERROR
            raise PlatformError(code, msg.headers.get(ERROR_HEADER, "error")) from None
    if response_model is None:
        return json.loads(msg.data) if msg.data else None
    return response_model.model_validate_json(msg.data)


def short_error(err: Exception) -> str:
    """An error in one line: a validation error's first few problems, anything else cut to 300 characters."""
    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(p) for p in e["loc"])
            parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
        return "; ".join(parts)
    return str(err)[:300]
