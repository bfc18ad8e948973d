"""Managed PostgreSQL keeps pg_cron in one database (RDS/Aurora, Cloud SQL: `postgres`)
while the product lives in another: `pgpulse migrate --cron-database postgres` schedules
the tick from there with cron.schedule_in_database, and pg_cron runs it in `app`; a role
without the rights is shown the exact statements an admin runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from relay import migrate
from relay.local.embedded import EmbeddedPostgres
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def managed() -> Iterator[EmbeddedPostgres]:
    """A cluster configured like RDS: cron.database_name = 'postgres', pg_cron made there."""
    with EmbeddedPostgres(fast=True) as server:
        with open(server.datadir / "postgresql.conf", "a") as conf:
            conf.write("cron.database_name = 'postgres'\n")  # the last setting wins
        server.restart()
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            conn.execute("CREATE DATABASE app")
        yield server


def test_pg_cron_in_postgres_ticks_pgpulse_in_app(managed, capsys):
    app = managed.dsn("app")
    migrate.upgrade(app, cron_database="postgres")
    err = capsys.readouterr().err
    assert 'pg_cron in database "postgres" ticks database "app"' in err
    with psycopg.connect(managed.dsn("postgres")) as conn:
        assert dict(conn.execute("SELECT jobname, database FROM cron.job ORDER BY jobname")
                    .fetchall()) == {"pgpulse-prune": "app", "pgpulse-tick": "app"}
    with psycopg.connect(app, autocommit=True) as conn:
        # pg_cron fires on the minute: wait for its tick to be recorded in app
        wait_for(lambda: conn.execute("SELECT count(*) FROM pgpulse.tick_runs"
                                      " WHERE trigger = 'pg_cron' AND finished_at IS NOT NULL"
                                      ).fetchone()[0] > 0,
                 timeout=100, interval=1, what="pg_cron to run the tick in database app")
    migrate.downgrade(app, "base", cron_database="postgres")
    with psycopg.connect(managed.dsn("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


def test_without_the_rights_the_admin_statements_are_printed(managed):
    role = f"appowner{os.getpid()}"
    with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGPULSE_", "DATABASE_URL"))}
    env |= {"DATABASE_URL": f"postgresql://{role}@127.0.0.1:{managed.port}/{role}",
            "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-m", "relay", "migrate", "--cron-database", "postgres"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert ("SELECT cron.schedule_in_database('pgpulse-tick', '* * * * *', "
                f"'CALL pgpulse.tick(p_trigger => ''pg_cron'')', '{role}');") in done.stderr
        with psycopg.connect(managed.dsn("postgres")) as conn:
            assert conn.execute("SELECT count(*) FROM cron.job WHERE database = %s",
                                (role,)).fetchone()[0] == 0
    finally:
        with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
