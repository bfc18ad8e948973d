"""`pgpulse migrate --downgrade` refuses to drop tables with rows and columns with set values
unless --force, names them in one line, and leaves the database as it was."""

from __future__ import annotations

import psycopg

from relay import migrate
from tests.support.cli import assert_one_line_error, pgpulse

HEAD = "0.2.0"


def version(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT version_num FROM pgpulse.alembic_version").fetchone()
    return row[0] if row else None


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_downgrade_base_keeps_a_populated_monitors_table_without_force(empty_db):
    dsn = empty_db()
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:  # public.monitors was made by pgpulse here
        conn.execute(
            "INSERT INTO public.monitors (url) "
            "SELECT 'https://e.example/' || g FROM generate_series(1, 20000) g"
        )

    refused = pgpulse("migrate", "--downgrade", "base", database_url=dsn)
    line = assert_one_line_error(refused, "--downgrade base would drop", command="migrate")
    assert "public.monitors (20000 rows)" in line
    assert line.endswith("add --force to drop them")
    assert version(dsn) == HEAD and _count(dsn, "public.monitors") == 20000

    forced = pgpulse("migrate", "--downgrade", "base", "--force", database_url=dsn)
    assert forced.returncode == 0, forced.stderr
    assert version(dsn) is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.monitors')").fetchone()[0] is None
