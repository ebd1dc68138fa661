"""Shared helpers for the dialogue integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

import adp_dialogue
from adp_common.bus import Bus
from adp_common.envelope import decode
from adp_common.schemas.dialogue import DialogueCommand, DialogueQuery, DiscussionEvent, DiscussionView
from adp_dialogue.app import DialogueApp
from adp_dialogue.settings import DialogueSettings
from adp_router.app import RouterApp
from adp_router.settings import RouterSettings
from adp_testing.inproc import running_service

MIGRATIONS = Path(adp_dialogue.__file__).parent / "migrations"
TOPIC = "How should a small team roll out feature flags safely?"


class EventLog:
    """Every discussion event and chunk seen on the bus (durable events decoded from their envelope)."""

    def __init__(self) -> None:
        self.events: list[DiscussionEvent] = []
        self.cond = asyncio.Condition()

    async def on_msg(self, msg: Msg) -> None:
        if msg.subject.endswith(".chunks"):
            ev = DiscussionEvent.model_validate_json(msg.data)
        else:
            ev = decode(msg.data).payload
        async with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    async def wait(self, pred: Callable[[list[DiscussionEvent]], Any], timeout: float = 30.0) -> Any:
        async with self.cond:
            result = await asyncio.wait_for(self.cond.wait_for(lambda: pred(self.events)), timeout)
        return result

    def of(self, did: str, name: str | None = None) -> list[DiscussionEvent]:
        return [e for e in self.events if e.discussionId == did and (name is None or e.event == name)]

    async def wait_event(self, did: str, name: str, count: int = 1, timeout: float = 30.0) -> DiscussionEvent:
        await self.wait(lambda _: len(self.of(did, name)) >= count, timeout)
        return self.of(did, name)[count - 1]


@contextlib.asynccontextmanager
async def event_log(bus: Bus) -> AsyncIterator[EventLog]:
    log = EventLog()
    sub = await bus.nc.subscribe(bus.catalog.subject("discussion", ">"), cb=log.on_msg)
    try:
        yield log
    finally:
        await sub.unsubscribe()


def dialogue_settings(nats_url: str, pg_dsn: str, prefix: str, db_name: str, **kw: Any) -> DialogueSettings:
    return DialogueSettings(
        nats_url=nats_url,
        database_url=pg_dsn,
        subject_prefix=prefix,
        database_name=db_name,
        heartbeat_interval_s=5,
        shutdown_grace_s=3,
        **kw,
    )


@contextlib.asynccontextmanager
async def dialogue(settings: DialogueSettings) -> AsyncIterator[DialogueApp]:
    app = DialogueApp(settings)
    async with running_service("dialogue", settings, app, migrations_dir=MIGRATIONS, admin_server=False):
        yield app


@contextlib.asynccontextmanager
async def router(nats_url: str, prefix: str, tokens_per_s: float = 20000.0) -> AsyncIterator[RouterApp]:
    s = RouterSettings(
        nats_url=nats_url,
        subject_prefix=prefix,
        router_simulated="always",
        simulated_ttft_ms=0,
        simulated_tokens_per_s=tokens_per_s,
        heartbeat_interval_s=5,
        shutdown_grace_s=3,
    )
    app = RouterApp(s)
    async with running_service("llm-router", s, app, use_database=False, admin_server=False):
        yield app


async def command(bus: Bus, **kw: Any) -> DiscussionView:
    return await bus.request(
        bus.catalog.dialogue_command, DialogueCommand.model_validate(kw), timeout=10, response_model=DiscussionView
    )


async def get(bus: Bus, user: str, did: str) -> DiscussionView:
    return await bus.request(
        bus.catalog.dialogue_query,
        DialogueQuery(kind="get", user_id=user, discussion_id=did),
        timeout=10,
        response_model=DiscussionView,
    )


async def stored_events(bus: Bus, did: str) -> list[DiscussionEvent]:
    msgs = await bus.stream_messages(bus.catalog.stream_name("DISCUSSIONS"), bus.catalog.discussion_events(did))
    return [decode(m.data).payload for m in msgs]


def dumps(view: DiscussionView) -> str:
    return json.dumps(view.model_dump(mode="json"), indent=1)[:3000]


async def wait_status(bus: Bus, did: str, status: str, user: str = "u1", timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await get(bus, user, did)
        if view.status == status:
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"status {view.status} != {status}: {view.error}")
        await asyncio.sleep(0.05)
