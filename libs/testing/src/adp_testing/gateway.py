"""Helpers for tests that drive a running gateway over HTTP (the gateway's own tests and end-to-end tests)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from adp_common.sse import SSEDecoder
from adp_gateway.settings import GatewaySettings

ADMIN_KEY = "adp_test_bootstrap_admin_key_0123456789"
HIGH = "100000"


def gateway_settings(
    nats_url: str, pg_dsn: str, prefix: str, db_name: str, redis_url: str, **kw: Any
) -> GatewaySettings:
    base: dict[str, Any] = dict(
        nats_url=nats_url,
        database_url=pg_dsn,
        subject_prefix=prefix,
        database_name=db_name,
        http_port=0,
        bootstrap_api_key=ADMIN_KEY,
        redis_url=redis_url,
        rate_limit_requests=int(HIGH),
        rate_limit_start=int(HIGH),
        rate_limit_proceed=int(HIGH),
        rate_limit_answers=int(HIGH),
        rate_limit_questions=int(HIGH),
        rate_limit_summary=int(HIGH),
        auth_failures_per_window=int(HIGH),
        heartbeat_interval_s=30,
        shutdown_grace_s=3,
        request_timeout_s=5,
        health_timeout_s=1,
    )
    base.update(kw)
    return GatewaySettings(**base)


@dataclass
class Client:
    """An httpx client bound to one API key."""

    http: httpx.AsyncClient
    key: str
    user_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def new_user(admin: httpx.AsyncClient, name: str = "alice", role: str = "user") -> tuple[str, str, str]:
    """(user id, key, key id)."""
    r = await admin.post("/api/admin/users", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = await admin.post(f"/api/admin/users/{uid}/keys")
    assert r.status_code == 201, r.text
    return uid, r.json()["key"], r.json()["id"]


def assert_envelope(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body
    assert r.headers.get("x-request-id")
    return body


async def read_sse(resp: httpx.Response, *, comments: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Parse an SSE response (adp_common.sse) into {'id'?, 'event', 'data'} dicts, the data parsed as JSON;
    comments (keep-alives) are yielded as {'comment'} unless `comments` is false."""
    decoder = SSEDecoder(comments=comments)
    async for chunk in resp.aiter_bytes():
        for ev in decoder.feed(chunk):
            if ev.comment is not None:
                yield {"comment": ev.comment}
                continue
            item: dict[str, Any] = {"event": ev.event, "data": json.loads(ev.data)}
            if ev.id is not None:
                item["id"] = int(ev.id)
            yield item


@contextlib.asynccontextmanager
async def platform_services(
    nats_url: str, pg_dsn: str, prefix: str, databases: Any, *, services: tuple[str, ...], tokens_per_s: float = 3000
):
    """Run the real llm-router (simulated provider, `tokens_per_s`: fast by default), cost, alerts and dialogue
    in-process (those named in `services`)."""
    from adp_testing.inproc import running_service

    async with contextlib.AsyncExitStack() as stack:
        common: dict[str, Any] = dict(
            nats_url=nats_url, database_url=pg_dsn, subject_prefix=prefix, heartbeat_interval_s=30
        )
        if "llm-router" in services:
            from adp_router.app import RouterApp
            from adp_router.settings import RouterSettings

            rs = RouterSettings(
                **common, router_simulated="always", simulated_ttft_ms=5, simulated_tokens_per_s=tokens_per_s
            )
            await stack.enter_async_context(running_service("llm-router", rs, RouterApp(rs), use_database=False))
        if "cost" in services:
            from adp_cost.app import CostApp
            from adp_cost.main import MIGRATIONS as COST_MIG
            from adp_cost.settings import CostSettings

            cs = CostSettings(**common, database_name=databases.name("cost"))
            await stack.enter_async_context(running_service("cost", cs, CostApp(cs), migrations_dir=COST_MIG))
        if "alerts" in services:
            from adp_alerts.app import AlertsApp
            from adp_alerts.main import MIGRATIONS as ALERTS_MIG
            from adp_alerts.settings import AlertsSettings

            als = AlertsSettings(**common, database_name=databases.name("alerts"))
            await stack.enter_async_context(running_service("alerts", als, AlertsApp(als), migrations_dir=ALERTS_MIG))
        if "dialogue" in services:
            from adp_dialogue.app import DialogueApp
            from adp_dialogue.main import MIGRATIONS as DLG_MIG
            from adp_dialogue.settings import DialogueSettings

            ds = DialogueSettings(**common, database_name=databases.name("dialogue"), turn_max_tokens=40)
            await stack.enter_async_context(running_service("dialogue", ds, DialogueApp(ds), migrations_dir=DLG_MIG))
        yield


def tiny_pdf(text: str) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    w = PdfWriter()
    page = w.add_blank_page(200, 200)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): w._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode())
    page[NameObject("/Contents")] = w._add_object(stream)
    buf = io.BytesIO()
    w.write(buf)
    return buf.getvalue()


def gateway_paths() -> set[str]:
    """Every path in the gateway's OpenAPI document (building the app needs no running service)."""
    from adp_gateway.api import build_api

    return set(build_api(offline_context()).openapi()["paths"])


def offline_context() -> Any:
    """Just enough of a gateway context to build the app and read its routes (settings, checks, metrics)."""
    from types import SimpleNamespace

    from adp_common.health import HealthChecks
    from adp_common.telemetry import Metrics

    rt = SimpleNamespace(checks=HealthChecks("gateway", "offline"), metrics=Metrics())
    return SimpleNamespace(settings=GatewaySettings(), rt=rt, draining=asyncio.Event())
