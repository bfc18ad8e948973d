"""`pgpulse migrate` at its edges: every failure is one line naming the problem and the fix,
a migration by a role without the rights says each missing right once with a hint that fits
a wheel install, and `pgpulse migrate` run again at head (by a superuser, after that) sets up
the roles and pg_cron as sql/ has them."""

from __future__ import annotations

import os

import psycopg
import pytest

from tests.support.cli import assert_one_line_error, pgpulse


def test_a_bad_revision_is_one_line_naming_the_revisions():
    for args in (["--sql", "--from", "0099"], ["--sql", "--revision", "0099"]):
        line = assert_one_line_error(pgpulse("migrate", *args), command="migrate")
        assert "no revision '0099': pgpulse's revisions are 0.2.0" in line, line


def test_an_unreachable_database_is_one_line_naming_the_setting():
    done = pgpulse("migrate", database_url="postgresql://nobody@127.0.0.1:1/app")
    line = assert_one_line_error(done, command="migrate")
    assert "cannot connect to the database" in line and "DATABASE_URL" in line


def test_a_database_migrated_by_a_newer_pgpulse_is_one_line(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgpulse.alembic_version SET version_num = '9.9.9'")
    for args in ([], ["--downgrade", "base"]):
        line = assert_one_line_error(pgpulse("migrate", *args, database_url=db_url))
        assert "at revision '9.9.9', which pgpulse" in line and "newer pgpulse" in line, line


@pytest.fixture
def owner_db(pg_server):
    """A fresh database owned by a role that is no superuser and may not create roles."""
    name = f"edges{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw-{name}'")
        admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    superuser = pg_server.dsn(name)
    yield superuser, superuser.replace("postgres@", f"{name}:pw-{name}@", 1)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE {name}")


def test_without_the_rights_each_warning_once_then_a_superuser_finishes_the_setup(owner_db):
    superuser, owner = owner_db
    done = pgpulse("migrate", database_url=owner)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("pgpulse: ")]
    assert len(warnings) == len(set(warnings)), done.stderr
    roles = [w for w in warnings if "may not create or alter the roles" in w]
    functions = [w for w in warnings if "SECURITY DEFINER functions" in w]
    cron = [w for w in warnings if "pg_cron" in w and "no job was scheduled here" in w]
    assert len(roles) == len(functions) == len(cron) == 1, done.stderr
    # hints a wheel install can follow: a command, no path of the repository
    assert "`pgpulse migrate --sql --from head`" in roles[0] + cron[0]
    assert "sql/roles.sql" not in done.stderr and "sql/cron.sql" not in done.stderr

    # what that SQL is: the roles and pg_cron set-up, nothing that fails on a migrated database
    setup = pgpulse("migrate", "--sql", "--from", "head")
    assert setup.returncode == 0 and "CREATE ROLE pgpulse_ticker" in setup.stdout
    assert "CREATE TABLE" not in setup.stdout

    def owners() -> set[str]:
        with psycopg.connect(superuser) as conn:
            return {
                owner
                for (owner,) in conn.execute(
                    "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc"
                    " WHERE pronamespace = 'pgpulse'::regnamespace AND prosecdef"
                )
            }

    assert owners() == {owner.split("://")[1].split(":")[0]}
    # at head already, a superuser's `pgpulse migrate` still sets up what was missing
    again = pgpulse("migrate", database_url=superuser)
    assert again.returncode == 0, again.stderr
    assert owners() == {"pgpulse_owner"}
    assert "may not" not in again.stderr
