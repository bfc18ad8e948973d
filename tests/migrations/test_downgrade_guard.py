"""`pgpulse migrate --downgrade` refuses to drop tables with rows and columns with set values
unless --force, names them in one line, and leaves the database as it was."""

from __future__ import annotations

import psycopg
import pytest

from relay import migrate
from relay.errors import DowngradeDropsData
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


def test_downgrade_0002_names_the_columns_with_values_it_would_drop(empty_db):
    dsn = empty_db()
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO pgpulse.regions (code) VALUES ('us-east-1'), ('eu-west-1')")
        conn.execute(
            "INSERT INTO public.monitors (url, check_interval_seconds, check_regions) "
            "SELECT 'https://e.example/' || g, 30, CASE WHEN g <= 120"
            " THEN ARRAY['us-east-1', 'eu-west-1'] END FROM generate_series(1, 200) g"
        )
        before = conn.execute("SELECT * FROM public.monitors ORDER BY id").fetchall()

    with pytest.raises(DowngradeDropsData) as refused:
        migrate.downgrade(dsn, "0002")
    message = str(refused.value)
    assert message.startswith("--downgrade 0002 would drop ")
    assert "public.monitors.check_regions (120 rows set)" in message
    assert "public.monitors.check_interval_seconds (200 rows set)" in message
    assert version(dsn) == HEAD
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT * FROM public.monitors ORDER BY id").fetchall() == before

    migrate.downgrade(dsn, "0002", force=True)
    assert version(dsn) == "0002"


def test_a_downgrade_that_drops_only_empty_tables_and_default_values_needs_no_force(empty_db):
    """Down to 0007 drops two empty tables and dead_letters.allow_fallback: while every row
    holds its default (true) that loses nothing; one false value is data."""
    dsn = empty_db()
    migrate.upgrade(dsn)
    dead_letter = (
        "INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality,"
        " scheduled_for, deliver_at, expires_at, payload, attempts, last_error{})"
        " VALUES (gen_random_uuid(), gen_random_uuid(), 'us-east-1', 'normal', now(), now(),"
        " now(), '{{}}', 5, 'boom'{})"
    )
    with psycopg.connect(dsn) as conn:
        conn.execute(dead_letter.format("", ""))
        conn.execute(dead_letter.format(", allow_fallback", ", false"))
    with pytest.raises(DowngradeDropsData, match=r"would drop pgpulse\.dead_letters\.allow_fallb"):
        migrate.downgrade(dsn, "0007")
    assert version(dsn) == HEAD

    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE pgpulse.dead_letters SET allow_fallback = true")
    migrate.downgrade(dsn, "0007")
    assert version(dsn) == "0007" and _count(dsn, "pgpulse.dead_letters") == 2
