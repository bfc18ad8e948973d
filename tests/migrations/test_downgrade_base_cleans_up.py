"""`pgpulse migrate --downgrade base` removes what pgpulse created outside its schema, the
pg_cron extension and the roles, only where pgpulse created them (pgpulse.created) and
nothing else uses them, and says what it kept and why; pgpulse.adoption lists everything
pgpulse added to a product's table. A cluster of its own: roles are the cluster's."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from relay import migrate
from relay.local.embedded import EmbeddedPostgres

ROLES = {"pgpulse_monitor", "pgpulse_owner", "pgpulse_relay", "pgpulse_ticker"}


@pytest.fixture
def cluster() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(fast=True) as server:
        yield server


def sql(dsn: str, statement: str, params=None) -> list[dict]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def roles(dsn: str) -> set[str]:
    return {
        r["rolname"]
        for r in sql(dsn, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgpulse%%'")
    }


def has_pg_cron(dsn: str) -> bool:
    return bool(sql(dsn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'"))


def said(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("pgpulse: ")]


def test_downgrade_base_removes_the_extension_and_roles_it_created_unless_in_use(cluster, capsys):
    app = cluster.dsn()  # the cluster's pg_cron database: migrate creates the extension here
    migrate.upgrade(app)
    assert roles(app) == ROLES and has_pg_cron(app)
    assert {(r["kind"], r["name"]) for r in sql(app, "SELECT * FROM pgpulse.created")} == {
        ("extension", "pg_cron"),
        *(("role", role) for role in ROLES),
    }
    capsys.readouterr()

    # nothing else uses them: all go
    migrate.downgrade(app, "base")
    assert roles(app) == set() and not has_pg_cron(app)
    lines = said(capsys)
    assert (
        "pgpulse: removed the pg_cron extension: pgpulse created it here, no job is left" in lines
    )
    for role in ROLES:
        assert f"pgpulse: removed role {role}: pgpulse created it, nothing else uses it" in lines
    assert lines[-1].startswith("pgpulse: (what one database cannot show: pg_cron jobs")

    # again, and now others use some: those stay, each with why
    migrate.upgrade(app)
    sql(app, "SELECT cron.schedule('nightly-vacuum', '0 4 * * *', 'VACUUM')")
    sql(app, "CREATE ROLE relay_app LOGIN IN ROLE pgpulse_relay")
    sql(app, "CREATE DATABASE reports")
    sql(cluster.dsn("reports"), "CREATE TABLE daily (day date)")
    sql(cluster.dsn("reports"), "GRANT SELECT ON daily TO pgpulse_monitor")
    capsys.readouterr()
    migrate.downgrade(app, "base")
    assert has_pg_cron(app) and roles(app) == {"pgpulse_monitor", "pgpulse_relay"}
    lines = said(capsys)
    assert (
        "pgpulse: kept the pg_cron extension pgpulse created: other jobs are scheduled in it: "
        "nightly-vacuum (postgres, database pgpulse)"
    ) in lines
    assert (
        "pgpulse: kept role pgpulse_relay (pgpulse created it): granted to relay_app "
        "(`REVOKE pgpulse_relay FROM relay_app` when they are done with it); then "
        "`DROP ROLE pgpulse_relay`"
    ) in lines
    assert (
        "pgpulse: kept role pgpulse_monitor (pgpulse created it): it owns objects or holds "
        "rights in reports (1); then `DROP ROLE pgpulse_monitor`"
    ) in lines
    assert "pgpulse: removed role pgpulse_ticker: pgpulse created it, nothing else uses it" in lines
    assert "pgpulse: removed role pgpulse_owner: pgpulse created it, nothing else uses it" in lines

    # a database whose migrate found some roles made already (by another database's
    # migrate): it records only those it made, and removes only those
    sql(app, "CREATE DATABASE shop")
    shop = cluster.dsn("shop")
    migrate.upgrade(shop)
    assert {r["name"] for r in sql(shop, "SELECT name FROM pgpulse.created")} == {
        "pgpulse_owner",
        "pgpulse_ticker",
    }
    capsys.readouterr()
    migrate.downgrade(shop, "base")
    lines = said(capsys)
    assert (
        "pgpulse: kept roles pgpulse_monitor, pgpulse_relay: no record that pgpulse created "
        "them from this database (an admin, another database's `pgpulse migrate` or a "
        "pgpulse before 0.2.0 did); DROP ROLE each when nothing uses it"
    ) in lines
    assert roles(shop) == {"pgpulse_monitor", "pgpulse_relay"}
    assert has_pg_cron(app)  # another database's: never this one's to drop


def test_the_adoption_record_lists_everything_pgpulse_added_to_the_products_table(empty_db):
    dsn = empty_db()
    sql(
        dsn,
        """CREATE TABLE public.monitors (id uuid PRIMARY KEY, url text NOT NULL,
               check_interval_minutes integer NOT NULL, is_active boolean NOT NULL,
               next_check_at timestamptz, last_scheduled_at timestamptz,
               preferred_region text)""",
    )
    on_the_table = """
        SELECT 'column' AS kind, attname::text AS name FROM pg_attribute
         WHERE attrelid = 'public.monitors'::regclass AND attnum > 0 AND NOT attisdropped
        UNION ALL
        SELECT 'trigger', tgname::text FROM pg_trigger
         WHERE tgrelid = 'public.monitors'::regclass AND NOT tgisinternal
        UNION ALL
        SELECT 'index', c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = 'public.monitors'::regclass"""
    before = {(r["kind"], r["name"]) for r in sql(dsn, on_the_table)}
    migrate.upgrade(dsn)
    added = {(r["kind"], r["name"]) for r in sql(dsn, on_the_table)} - before
    listed = {
        (r["kind"], r["name"])
        for r in sql(dsn, "SELECT kind, name FROM pgpulse.adoption WHERE kind <> 'released'")
    }
    assert ("column", "check_regions") in added and ("trigger", "pgpulse_follow_insert") in added
    assert listed == added
