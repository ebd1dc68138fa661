"""Entry point: `adp-dialogue` or `python -m adp_dialogue.main`."""

from __future__ import annotations

from pathlib import Path

from adp_common.service import main_for
from adp_common.settings import load_settings
from adp_dialogue.app import DialogueApp
from adp_dialogue.settings import DialogueSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def main() -> None:
    settings = load_settings(DialogueSettings)
    main_for("dialogue", settings, DialogueApp(settings), migrations_dir=MIGRATIONS, use_database=True)


if __name__ == "__main__":
    main()
