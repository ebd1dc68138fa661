"""The alerts service shell: wires bus handlers to the domain logic."""

from __future__ import annotations

from adp_common.service import ServiceRuntime

from adp_alerts.settings import AlertsSettings


class AlertsApp:
    def __init__(self, settings: AlertsSettings) -> None:
        self.settings = settings
        self.rt: ServiceRuntime | None = None

    async def start(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    async def stop(self) -> None:
        pass
