"""The llm-router service shell: wires bus handlers to the domain logic."""

from __future__ import annotations

from adp_common.service import ServiceRuntime

from adp_router.settings import RouterSettings


class RouterApp:
    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    async def stop(self) -> None:
        pass
