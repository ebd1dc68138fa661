"""Entry point: `adp-cost` or `python -m adp_cost.main`."""

from __future__ import annotations

from pathlib import Path

from adp_common.service import main_for
from adp_common.settings import load_settings
from adp_cost.app import CostApp
from adp_cost.settings import CostSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def main() -> None:
    settings = load_settings(CostSettings)
    main_for("cost", settings, CostApp(settings), migrations_dir=MIGRATIONS, use_database=True)


if __name__ == "__main__":
    main()
