"""Entry point: `adp-gateway` or `python -m adp_gateway.main`."""

from __future__ import annotations

from pathlib import Path

from adp_common.service import main_for
from adp_common.settings import load_settings

from adp_gateway.app import GatewayApp
from adp_gateway.settings import GatewaySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def main() -> None:
    settings = load_settings(GatewaySettings)
    main_for("gateway", settings, GatewayApp(settings), migrations_dir=MIGRATIONS, use_database=True)


if __name__ == "__main__":
    main()
