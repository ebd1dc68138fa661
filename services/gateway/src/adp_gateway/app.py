"""The gateway service shell: wires bus handlers to the domain logic."""

from __future__ import annotations

from adp_common.service import ServiceRuntime

from adp_gateway.settings import GatewaySettings


class GatewayApp:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    async def stop(self) -> None:
        pass
