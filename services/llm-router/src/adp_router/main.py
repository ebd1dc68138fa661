"""Entry point: `adp-llm-router` or `python -m adp_router.main`."""

from __future__ import annotations

from adp_common.service import main_for
from adp_common.settings import load_settings
from adp_router.app import RouterApp
from adp_router.settings import RouterSettings


def main() -> None:
    settings = load_settings(RouterSettings)
    main_for("llm-router", settings, RouterApp(settings), use_database=False)


if __name__ == "__main__":
    main()
