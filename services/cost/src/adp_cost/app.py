"""The cost service shell: wires bus handlers to the domain logic."""

from __future__ import annotations

from adp_common.service import ServiceRuntime

from adp_cost.settings import CostSettings


class CostApp:
    def __init__(self, settings: CostSettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    async def stop(self) -> None:
        pass
