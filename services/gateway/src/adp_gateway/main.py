"""Entry point: `adp-gateway` or `python -m adp_gateway.main` (client API on ADP_HTTP_PORT, default 8080)."""

from __future__ import annotations

import contextlib

from adp_common.logging import setup_logging
from adp_common.service import run_loop
from adp_common.settings import load_settings
from adp_common.telemetry import setup_tracing
from adp_gateway.server import MIGRATIONS, serve_until_signalled
from adp_gateway.settings import GatewaySettings

__all__ = ["MIGRATIONS", "main"]


def main() -> None:
    settings = load_settings(GatewaySettings)
    instance = settings.instance_id or "gateway"
    setup_logging(
        "gateway",
        instance,
        level=settings.log_level,
        log_dir=settings.log_dir,
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
    )
    setup_tracing("gateway", instance)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(serve_until_signalled(settings), settings.event_loop)


if __name__ == "__main__":
    main()
