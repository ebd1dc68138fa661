"""`Client` (blocking) and `AsyncClient` (asyncio) for the gateway's API, on httpx; the same methods, typed
answers (adp_common schemas), errors as `ApiError`, discussion events as typed `ClientEvent`s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, TypeVar

import httpx

from adp_client import calls
from adp_client.calls import ApiError, Call
from adp_client.stream import Follow, backoff_s, refused
from adp_common.schemas.alerts import AlertEvent, AlertList
from adp_common.schemas.cost import BudgetState, CostSummary
from adp_common.schemas.dialogue import DiscussionView, PersonaSpec
from adp_common.schemas.events import ClientEvent

T = TypeVar("T")
Format = Literal["json", "markdown"]


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Accept": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}


def _network_error(base_url: str, err: Exception) -> ApiError:
    return ApiError("NETWORK_ERROR", f"cannot reach the gateway at {base_url}: {err}")


class Client:
    """Blocking client: `with Client(url, api_key) as c: view = c.create_discussion("…")`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call[T]) -> T:
        try:
            resp = self.http.request(call.method, call.path, json=call.json, params=call.params or None)
        except httpx.HTTPError as err:
            raise _network_error(self.base_url, err) from err
        return call.result(resp)

    # ---- discussions ------------------------------------------------------------------------------------
    def create_discussion(
        self,
        topic: str,
        *,
        personas: list[PersonaSpec | str] | None = None,
        max_rounds: int | None = None,
        auto: bool = False,
        files: list[str] | None = None,
    ) -> DiscussionView:
        return self.send(calls.create(topic, personas, max_rounds, auto, files))

    def list_discussions(self) -> list[DiscussionView]:
        return self.send(Call("GET", "/api/discussions", calls.LIST)).discussions

    def get_discussion(self, discussion_id: str) -> DiscussionView:
        return self.send(Call("GET", calls.discussion_path(discussion_id), calls.VIEW))

    def proceed(self, discussion_id: str) -> DiscussionView:
        return self.send(calls.act(discussion_id, "proceed"))

    def answer(
        self, discussion_id: str, answers: dict[str, list[str]], round_number: int | None = None
    ) -> DiscussionView:
        return self.send(calls.answers(discussion_id, answers, round_number))

    def send_input(self, discussion_id: str, text: str) -> DiscussionView:
        return self.send(calls.act(discussion_id, "input", {"input": text}))

    def ask_questions(self, discussion_id: str) -> DiscussionView:
        return self.send(calls.act(discussion_id, "questions"))

    def summarise(self, discussion_id: str) -> DiscussionView:
        return self.send(calls.act(discussion_id, "summary"))

    def stop(self, discussion_id: str) -> DiscussionView:
        return self.send(calls.act(discussion_id, "stop"))

    def export(self, discussion_id: str, fmt: Format = "json") -> str:
        return self.send(calls.export(discussion_id, fmt))

    def events(
        self, discussion_id: str, *, last_event_id: int = 0, reconnect: bool = True, read_timeout: float = 60.0
    ) -> Iterator[ClientEvent]:
        """The discussion's events from `last_event_id` on, until its terminal event; after a drop it
        reconnects (with back-off) and resumes with Last-Event-ID, so nothing is missed or repeated."""
        follow = Follow(last_event_id)
        path = calls.discussion_path(discussion_id, "events")
        timeout = httpx.Timeout(10.0, read=read_timeout)
        attempt = 0
        while not follow.ended:
            try:
                with self.http.stream("GET", path, headers=follow.headers(), timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        if (err := refused(resp)) is not None:
                            raise err
                    else:
                        attempt = 0
                        for chunk in resp.iter_bytes():
                            yield from follow.feed(chunk)
                            if follow.ended:
                                return
            except httpx.HTTPError as err:
                if not reconnect:
                    raise _network_error(self.base_url, err) from err
            if not reconnect:
                return
            attempt += 1
            follow.reconnects += 1
            time.sleep(backoff_s(attempt))

    # ---- files, costs, alerts, admin --------------------------------------------------------------------
    def upload_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> dict[str, Any]:
        try:
            resp = self.http.post("/api/files", files={"file": (name, data, content_type)})
        except httpx.HTTPError as err:
            raise _network_error(self.base_url, err) from err
        return Call("POST", "/api/files", calls.OBJECT).result(resp)

    def costs(self, **params: str | None) -> CostSummary:
        return self.send(calls.costs(**params))

    def alerts(self, **params: str | None) -> AlertList:
        return self.send(calls.alerts(**params))

    def ack_alert(self, alert_id: str) -> AlertEvent:
        return self.send(Call("POST", f"/api/alerts/{alert_id}/ack", calls.ALERT))

    def create_user(self, name: str, role: Literal["user", "admin"] = "user") -> dict[str, Any]:
        return self.send(Call("POST", "/api/admin/users", calls.OBJECT, {"name": name, "role": role}))

    def create_key(self, user_id: str) -> dict[str, Any]:
        return self.send(Call("POST", f"/api/admin/users/{user_id}/keys", calls.OBJECT))

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.send(Call("DELETE", f"/api/admin/keys/{key_id}", calls.OBJECT))

    def set_budget(self, daily_limit_usd: str) -> BudgetState:
        return self.send(Call("PUT", "/api/admin/budget", calls.BUDGET, {"daily_limit_usd": daily_limit_usd}))


class AsyncClient:
    """The same API for asyncio: `async with AsyncClient(url, api_key) as c: await c.create_discussion("…")`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call[T]) -> T:
        try:
            resp = await self.http.request(call.method, call.path, json=call.json, params=call.params or None)
        except httpx.HTTPError as err:
            raise _network_error(self.base_url, err) from err
        return call.result(resp)

    async def create_discussion(
        self,
        topic: str,
        *,
        personas: list[PersonaSpec | str] | None = None,
        max_rounds: int | None = None,
        auto: bool = False,
        files: list[str] | None = None,
    ) -> DiscussionView:
        return await self.send(calls.create(topic, personas, max_rounds, auto, files))

    async def list_discussions(self) -> list[DiscussionView]:
        return (await self.send(Call("GET", "/api/discussions", calls.LIST))).discussions

    async def get_discussion(self, discussion_id: str) -> DiscussionView:
        return await self.send(Call("GET", calls.discussion_path(discussion_id), calls.VIEW))

    async def proceed(self, discussion_id: str) -> DiscussionView:
        return await self.send(calls.act(discussion_id, "proceed"))

    async def answer(
        self, discussion_id: str, answers: dict[str, list[str]], round_number: int | None = None
    ) -> DiscussionView:
        return await self.send(calls.answers(discussion_id, answers, round_number))

    async def send_input(self, discussion_id: str, text: str) -> DiscussionView:
        return await self.send(calls.act(discussion_id, "input", {"input": text}))

    async def ask_questions(self, discussion_id: str) -> DiscussionView:
        return await self.send(calls.act(discussion_id, "questions"))

    async def summarise(self, discussion_id: str) -> DiscussionView:
        return await self.send(calls.act(discussion_id, "summary"))

    async def stop(self, discussion_id: str) -> DiscussionView:
        return await self.send(calls.act(discussion_id, "stop"))

    async def export(self, discussion_id: str, fmt: Format = "json") -> str:
        return await self.send(calls.export(discussion_id, fmt))

    async def events(
        self,
        discussion_id: str,
        *,
        last_event_id: int = 0,
        reconnect: bool = True,
        read_timeout: float = 60.0,
        follow: Follow | None = None,
    ) -> AsyncIterator[ClientEvent]:
        """As `Client.events`. Pass a `Follow` to keep the resume point across calls (e.g. another gateway)."""
        follow = follow or Follow(last_event_id)
        path = calls.discussion_path(discussion_id, "events")
        timeout = httpx.Timeout(10.0, read=read_timeout)
        attempt = 0
        while not follow.ended:
            try:
                async with self.http.stream("GET", path, headers=follow.headers(), timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        if (err := refused(resp)) is not None:
                            raise err
                    else:
                        attempt = 0
                        async for chunk in resp.aiter_bytes():
                            for ev in follow.feed(chunk):
                                yield ev
                            if follow.ended:
                                return
            except httpx.HTTPError as err:
                if not reconnect:
                    raise _network_error(self.base_url, err) from err
            if not reconnect:
                return
            attempt += 1
            follow.reconnects += 1
            await asyncio.sleep(backoff_s(attempt))

    async def costs(self, **params: str | None) -> CostSummary:
        return await self.send(calls.costs(**params))

    async def alerts(self, **params: str | None) -> AlertList:
        return await self.send(calls.alerts(**params))

    async def create_user(self, name: str, role: Literal["user", "admin"] = "user") -> dict[str, Any]:
        return await self.send(Call("POST", "/api/admin/users", calls.OBJECT, {"name": name, "role": role}))

    async def create_key(self, user_id: str) -> dict[str, Any]:
        return await self.send(Call("POST", f"/api/admin/users/{user_id}/keys", calls.OBJECT))

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return await self.send(Call("DELETE", f"/api/admin/keys/{key_id}", calls.OBJECT))

    async def set_budget(self, daily_limit_usd: str) -> BudgetState:
        return await self.send(Call("PUT", "/api/admin/budget", calls.BUDGET, {"daily_limit_usd": daily_limit_usd}))
