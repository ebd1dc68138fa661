"""What each API call sends and what it answers, as plain data: the sync and async clients only carry it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from adp_common.schemas.alerts import AlertEvent, AlertList
from adp_common.schemas.cost import BudgetState, CostSummary
from adp_common.schemas.dialogue import DiscussionList, DiscussionView, PersonaSpec

T = TypeVar("T")
JsonObject = dict[str, Any]


class ApiError(Exception):
    """An error answer of the gateway (its `{"error": {code, message}}` envelope) or a transport failure
    (code NETWORK_ERROR, status 0)."""

    def __init__(self, code: str, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


def error_of(resp: httpx.Response) -> ApiError:
    code, message = f"HTTP_{resp.status_code}", resp.reason_phrase
    try:
        err = resp.json().get("error") or {}
        code, message = err.get("code") or code, err.get("message") or message
    except (ValueError, AttributeError):
        pass
    retry_after = resp.headers.get("retry-after")
    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
    return ApiError(code, message, resp.status_code, wait)


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    answer: TypeAdapter[T]
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)
    text: bool = False  # the answer is the body as text (exports)

    def result(self, resp: httpx.Response) -> T:
        if resp.status_code >= 400:
            raise error_of(resp)
        if self.text:
            return self.answer.validate_python(resp.text)
        return self.answer.validate_json(resp.content or b"null")


def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


VIEW = _adapter(DiscussionView)
LIST = _adapter(DiscussionList)
OBJECT = _adapter(JsonObject)
TEXT = _adapter(str)
COSTS = _adapter(CostSummary)
ALERTS = _adapter(AlertList)
ALERT = _adapter(AlertEvent)
BUDGET = _adapter(BudgetState)


def discussion_path(discussion_id: str, action: str = "") -> str:
    return f"/api/discussions/{quote(discussion_id, safe='')}" + (f"/{action}" if action else "")


def create(
    topic: str,
    personas: list[PersonaSpec | str] | None = None,
    max_rounds: int | None = None,
    auto: bool = False,
    files: list[str] | None = None,
) -> Call[DiscussionView]:
    body: JsonObject = {"topic": topic, "auto": auto, "files": list(files or [])}
    if personas is not None:
        body["personas"] = [p.model_dump() if isinstance(p, BaseModel) else p for p in personas]
    if max_rounds is not None:
        body["maxRounds"] = max_rounds
    return Call("POST", "/api/discussions", VIEW, body)


def act(discussion_id: str, action: str, body: JsonObject | None = None) -> Call[DiscussionView]:
    return Call("POST", discussion_path(discussion_id, action), VIEW, body or {})


def answers(discussion_id: str, chosen: dict[str, list[str]], round_number: int | None = None) -> Call[DiscussionView]:
    body: JsonObject = {"answers": chosen}
    if round_number is not None:
        body["roundNumber"] = round_number
    return act(discussion_id, "answers", body)


def export(discussion_id: str, fmt: Literal["json", "markdown"]) -> Call[str]:
    return Call("GET", discussion_path(discussion_id, "export"), TEXT, params={"format": fmt}, text=True)


def costs(**params: str | None) -> Call[CostSummary]:
    return Call("GET", "/api/costs", COSTS, params={k: v for k, v in params.items() if v is not None})


def alerts(**params: str | None) -> Call[AlertList]:
    return Call("GET", "/api/alerts", ALERTS, params={k: v for k, v in params.items() if v is not None})
