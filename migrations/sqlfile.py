"""Revisions are thin: each applies SQL files kept under sql/ or migrations/sql/."""

import sys
from pathlib import Path

from alembic import op

ROOT = Path(__file__).resolve().parent.parent


def apply(*relative_paths: str) -> None:
    """Run each file as one script on the migration's connection; show server warnings."""
    # the psycopg connection itself (inside Alembic's transaction): no parameter parsing
    raw = op.get_bind().connection.driver_connection
    raw.add_notice_handler(_print_warning)
    try:
        for rel in relative_paths:
            raw.execute((ROOT / rel).read_text())
    finally:
        raw.remove_notice_handler(_print_warning)


def _print_warning(diag) -> None:
    if diag.severity_nonlocalized in ("WARNING", "NOTICE") and diag.message_primary.startswith("pgpulse"):
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        print(f"{diag.message_primary}{hint}", file=sys.stderr)
