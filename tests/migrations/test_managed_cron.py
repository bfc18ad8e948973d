"""Managed PostgreSQL keeps pg_cron in one database (RDS/Aurora, Cloud SQL: `postgres`)
while the product lives in another: `pgpulse migrate --cron-database postgres` schedules
the tick from there with cron.schedule_in_database, and pg_cron runs it in `app`; a role
without the rights is shown the exact statements an admin runs."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import psycopg
import pytest

from relay import migrate
from relay.errors import DowngradeDropsData
from relay.local.embedded import EmbeddedPostgres
from tests.support.cli import pgpulse
from tests.support.cron_minute import Scenario
from tests.support.waiting import wait_for


@contextlib.contextmanager
def managed_cluster() -> Iterator[EmbeddedPostgres]:
    """A cluster configured like RDS: cron.database_name = 'postgres', pg_cron made there."""
    with EmbeddedPostgres(fast=True, settings={"cron.database_name": "'postgres'"}) as server:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            conn.execute("CREATE DATABASE app")
        yield server


@pytest.fixture(scope="module")
def managed() -> Iterator[EmbeddedPostgres]:
    with managed_cluster() as server:
        yield server


class TickInApp(Scenario):
    """A managed cluster of its own, `app` migrated with --cron-database postgres."""

    def arrange(self) -> None:
        self.managed = self.resources.enter_context(managed_cluster())
        self.err = io.StringIO()
        with contextlib.redirect_stderr(self.err):
            migrate.upgrade(self.managed.dsn("app"), cron_database="postgres")


@pytest.mark.slow
@pytest.mark.cron_minute(scenario=TickInApp)
def test_pg_cron_in_postgres_ticks_pgpulse_in_app(cron_minute):
    managed = cron_minute.managed
    app = managed.dsn("app")
    err = cron_minute.err.getvalue()
    assert 'pg_cron in database "postgres" ticks database "app"' in err
    with psycopg.connect(managed.dsn("postgres")) as conn:
        # never as a superuser: the tick in app, the prune of its own runs where pg_cron
        # keeps them
        assert conn.execute(
            "SELECT jobname, database, username FROM cron.job ORDER BY jobname"
        ).fetchall() == [
            ("pgpulse-prune", "postgres", "pgpulse_ticker"),
            ("pgpulse-tick", "app", "pgpulse_ticker"),
        ]
    with psycopg.connect(app, autocommit=True) as conn:
        # pg_cron fires on the minute: wait for its tick to be recorded in app
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgpulse.tick_runs"
                    " WHERE trigger = 'pg_cron' AND finished_at IS NOT NULL"
                ).fetchone()[0]
                > 0
            ),
            timeout=cron_minute.left(100),
            interval=1,
            what="pg_cron to run the tick in database app",
        )
    # the tick's run records would go: refused, and the tick stays scheduled
    with pytest.raises(DowngradeDropsData, match=r"pgpulse\.tick_runs \(\d+ rows?\)"):
        migrate.downgrade(app, "base", cron_database="postgres")
    with psycopg.connect(managed.dsn("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 2
    migrate.downgrade(app, "base", cron_database="postgres", force=True)
    with psycopg.connect(managed.dsn("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


def test_without_the_rights_the_admin_statements_are_printed(managed):
    role = f"appowner{os.getpid()}"
    with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    try:
        done = pgpulse(
            "migrate",
            "--cron-database",
            "postgres",
            database_url=f"postgresql://{role}@127.0.0.1:{managed.port}/{role}",
        )
        assert done.returncode == 0, done.stderr
        assert (
            "SELECT cron.schedule_in_database('pgpulse-tick', '* * * * *', "
            f"'CALL pgpulse.tick(p_trigger => ''pg_cron'')', '{role}', username => 'pgpulse_ticker');"
        ) in done.stderr
        with psycopg.connect(managed.dsn("postgres")) as conn:
            assert (
                conn.execute(
                    "SELECT count(*) FROM cron.job WHERE database = %s", (role,)
                ).fetchone()[0]
                == 0
            )
    finally:
        with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_second_database_ticked_by_the_same_role_is_not_a_silent_no_op(managed, capsys):
    """pg_cron keys jobs by name and role: the same role's pgpulse-tick for a second database
    would only rewrite the first one's. migrate says so, with what a superuser runs instead."""
    with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE app2")
    try:
        migrate.upgrade(managed.dsn("app"), cron_database="postgres")
        migrate.upgrade(managed.dsn("app2"), cron_database="postgres")
        err = capsys.readouterr().err
        assert 'ticks database "app2"' not in err
        assert (
            'pg_cron in database "postgres" already runs pgpulse\'s jobs for database "app" as '
            'role "pgpulse_ticker"'
        ) in err
        assert (
            "SELECT cron.schedule_in_database('pgpulse-tick', '* * * * *', 'CALL pgpulse.tick("
            "p_trigger => ''pg_cron'')', 'app2', username => 'ROLE');"
        ) in err
        with psycopg.connect(managed.dsn("postgres")) as conn:  # app's jobs are as they were
            assert conn.execute(
                "SELECT jobname, database FROM cron.job ORDER BY jobname"
            ).fetchall() == [("pgpulse-prune", "postgres"), ("pgpulse-tick", "app")]
    finally:
        migrate.downgrade(managed.dsn("app"), "base", cron_database="postgres", force=True)
        with psycopg.connect(managed.dsn("postgres"), autocommit=True) as admin:
            admin.execute("DROP DATABASE app2 WITH (FORCE)")
