"""Entry point: `adp-alerts` or `python -m adp_alerts.main`."""

from __future__ import annotations

from pathlib import Path

from adp_alerts.app import AlertsApp
from adp_alerts.settings import AlertsSettings
from adp_common.service import main_for
from adp_common.settings import load_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def main() -> None:
    settings = load_settings(AlertsSettings)
    main_for("alerts", settings, AlertsApp(settings), migrations_dir=MIGRATIONS, use_database=True)


if __name__ == "__main__":
    main()
