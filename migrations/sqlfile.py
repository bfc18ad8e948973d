"""Revisions are thin: each applies SQL files kept under sql/ or migrations/sql/."""

import sys
from pathlib import Path

from alembic import op

ROOT = Path(__file__).resolve().parent.parent
# Revision 0001's released SQL opens with CREATE SCHEMA pgpulse, but since 0002 Alembic's
# version table lives in that schema and so exists before 0001 runs. It also creates
# public.monitors: where the product has that table already, 0001 applies ADOPT instead,
# which makes pgpulse.regions at once, so 0002's move of public.regions is skipped there.
INITIAL = "migrations/sql/0001_initial.sql"
ADOPT = "migrations/sql/0001_adopt.sql"
REGIONS_MOVE = "migrations/sql/0002_pgpulse_owns_regions.sql"
# (to_regnamespace, not a cast: a host's own Alembic env has made no schema pgpulse)
_ONLY_VERSION_TABLE = r"""
SELECT to_regnamespace('pgpulse') IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM pg_class
                    WHERE relnamespace = to_regnamespace('pgpulse')
                      AND relname NOT LIKE 'alembic\_version%')
   AND NOT EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = to_regnamespace('pgpulse'))
"""

_STEP_ASIDE = "ALTER SCHEMA pgpulse RENAME TO pgpulse_installing;"
_HAND_OVER = (
    "ALTER TABLE pgpulse_installing.alembic_version SET SCHEMA pgpulse;\n"
    "DROP SCHEMA pgpulse_installing;"
)


def apply(*relative_paths: str) -> None:
    """Run each file as one script on the migration's connection; show server warnings.
    Offline (`pgpulse migrate --sql`), print each file instead, for an empty database."""
    context = op.get_context()
    if context.as_sql:
        for rel in relative_paths:
            sql = (ROOT / rel).read_text()
            if rel == INITIAL:  # the offline script made schema pgpulse for the version table
                sql = "\n".join([_STEP_ASIDE, sql, _HAND_OVER])
            context.impl.static_output(sql.rstrip() + "\n")
        return
    # the psycopg connection itself (inside Alembic's transaction): no parameter parsing
    raw = op.get_bind().connection.driver_connection
    # a dry run (relay.migrate.would_drop) is rolled back: what it says would mislead
    quiet = context.config is not None and "dry_run" in context.config.attributes
    notices = _ignore if quiet else _print_warning
    raw.add_notice_handler(notices)
    # a revision may SET LOCAL search_path (0006 does): Alembic's own statements after it,
    # on a host's unqualified alembic_version, must still find their table
    search_path = raw.execute("SELECT current_setting('search_path')").fetchone()[0]
    try:
        for rel in relative_paths:
            if rel == INITIAL and _exists(raw, "public.monitors"):
                raw.execute((ROOT / ADOPT).read_text())
            elif rel == INITIAL and raw.execute(_ONLY_VERSION_TABLE).fetchone()[0]:
                _apply_beside_version_table(raw, (ROOT / rel).read_text())
            elif rel == REGIONS_MOVE and _exists(raw, "pgpulse.regions"):
                continue
            else:
                raw.execute((ROOT / rel).read_text())
        raw.execute("SELECT set_config('search_path', %s, true)", (search_path,))
    finally:
        raw.remove_notice_handler(notices)


def _exists(raw, table: str) -> bool:
    return raw.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


def _apply_beside_version_table(raw, sql: str) -> None:
    """Runs the released 0001 SQL unchanged: the schema that holds only the version table
    steps aside while 0001 creates pgpulse, then hands the version table over."""
    raw.execute(_STEP_ASIDE)
    raw.execute(sql)
    raw.execute(_HAND_OVER)


def _ignore(diag) -> None:
    pass


def _print_warning(diag) -> None:
    if diag.severity_nonlocalized in ("WARNING", "NOTICE") and diag.message_primary.startswith(
        "pgpulse"
    ):
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        print(f"{diag.message_primary}{hint}", file=sys.stderr)
