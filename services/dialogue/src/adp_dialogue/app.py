"""The dialogue service shell: wires bus handlers to the domain logic."""

from __future__ import annotations

import asyncio
import contextlib

from adp_common.bus import Consumer
from adp_common.schemas.dialogue import DialogueCommand, DialogueQuery
from adp_common.service import ServiceRuntime
from adp_dialogue.commands import Commands
from adp_dialogue.engine import Engine, Metrics
from adp_dialogue.settings import DialogueSettings

WORKER_DURABLE = "dialogue-worker"


class DialogueApp:
    def __init__(self, settings: DialogueSettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None
        self.engine: Engine | None = None
        self.commands: Commands | None = None
        self.consumer: Consumer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt
        assert rt.bus is not None and rt.pool is not None
        bus = rt.bus
        self.engine = Engine(self.settings, bus, rt.pool, Metrics(rt.metrics.registry))
        # Commands and queries (a user waiting on a REST call) get connections of their own, so they never
        # queue behind hundreds of background steps for the runtime's pool.
        command_pool = await rt.open_extra_pool(self.settings.command_pool_size)
        self.commands = Commands(self.settings, command_pool, self.engine)
        await bus.ensure_streams(["DIALOGUE_WORK", "DISCUSSIONS"])
        await bus.serve(bus.catalog.dialogue_command, self.commands.command, DialogueCommand, name="command")
        await bus.serve(bus.catalog.dialogue_query, self.commands.query, DialogueQuery, name="query")
        self.consumer = await bus.consume(
            bus.catalog.stream_name("DIALOGUE_WORK"),
            WORKER_DURABLE,
            self.engine.handle,
            concurrency=self.settings.worker_concurrency,
            batch=self.settings.worker_concurrency,
            ack_wait=self.settings.step_ack_wait_s,
            progress_every=self.settings.step_progress_s,
            max_deliver=self.settings.step_max_deliver,
        )
        self._sweeper = asyncio.create_task(self.engine.sweeper())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        # The runtime's bus.close() drains the worker (in-flight steps finish or are handed back).
