"""Least privilege: the relay and the tick run as roles from sql/roles.sql that may do
what they need and nothing else."""

import psycopg
import pytest

from relay.resources import sql_text
from tests.support.cli import pgpulse
from tests.support.dsn import as_user
from tests.support.seeding import add_monitors

LOGINS = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relay_app') THEN
        CREATE ROLE relay_app LOGIN IN ROLE pgpulse_relay;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ticker_app') THEN
        CREATE ROLE ticker_app LOGIN IN ROLE pgpulse_ticker;
    END IF;
END
$$
"""


def test_relay_and_ticker_roles_do_their_job_and_no_more(conn, db_url, regions, relay_env):
    conn.execute(sql_text("roles.sql"))
    conn.execute(LOGINS)
    add_monitors(conn, 30)

    ticked = pgpulse(
        "tick", "--json", env=relay_env | {"DATABASE_URL": as_user(db_url, "ticker_app")}
    )
    assert ticked.returncode == 0, ticked.stderr
    relayed = pgpulse(
        "relay", "--once", "--json", env=relay_env | {"DATABASE_URL": as_user(db_url, "relay_app")}
    )
    assert relayed.returncode == 0, relayed.stderr
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0
    assert '"published": 30' in relayed.stdout

    # each refusal for the right reason: the privilege that is missing, on the object named
    with psycopg.connect(as_user(db_url, "relay_app"), autocommit=True) as relay_conn:
        for statement, reason in (
            # of monitors the relay reads the routing columns only: the jobs it
            # publishes carry their check
            ("SELECT url FROM public.monitors LIMIT 1", "permission denied for table monitors"),
            (
                "SELECT check_spec FROM public.monitors LIMIT 1",
                "permission denied for table monitors",
            ),
            ("SELECT * FROM public.monitors LIMIT 1", "permission denied for table monitors"),
            (
                "UPDATE public.monitors SET url = 'https://evil.example'",
                "permission denied for table monitors",
            ),
            (
                "INSERT INTO public.monitors (url) VALUES ('https://x.example')",
                "permission denied for table monitors",
            ),
            ("DELETE FROM pgpulse.regions", "permission denied for table regions"),
            ("UPDATE pgpulse.regions SET is_default = true", "permission denied for table regions"),
            ("DELETE FROM pgpulse.tick_runs", "permission denied for table tick_runs"),
            ("CALL pgpulse.tick()", "permission denied for procedure tick"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=reason):
                relay_conn.execute(statement)
        # what it needs: region health, and the routing columns (a recovered region gets its
        # jobs back, orphaned jobs go where their monitor's jobs go now)
        relay_conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
        assert (
            relay_conn.execute(
                "SELECT count(*) FROM (SELECT id, preferred_region, allow_fallback, check_regions "
                "FROM public.monitors) m"
            ).fetchone()[0]
            == 30
        )
    with psycopg.connect(as_user(db_url, "ticker_app"), autocommit=True) as ticker_conn:
        for statement, reason in (
            ("SELECT * FROM pgpulse.outbox", "permission denied for table outbox"),
            ("DELETE FROM pgpulse.outbox", "permission denied for table outbox"),
            (
                "UPDATE public.monitors SET url = 'https://x.example'",
                "permission denied for table monitors",
            ),
            ("DELETE FROM public.monitors", "permission denied for table monitors"),
            ("SELECT * FROM pgpulse.dead_letters", "permission denied for table dead_letters"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=reason):
                ticker_conn.execute(statement)
    # the tick is not for everyone: a role with no grant may not run it
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nobody_app') "
        "THEN CREATE ROLE nobody_app LOGIN; END IF; END $$"
    )
    conn.execute("GRANT USAGE ON SCHEMA pgpulse TO nobody_app")
    assert (
        conn.execute(
            "SELECT has_function_privilege('public', "
            "'pgpulse.tick(bigint, text, interval, interval, integer)', 'EXECUTE') AS x"
        ).fetchone()["x"]
        is False
    )
    with psycopg.connect(as_user(db_url, "nobody_app"), autocommit=True) as nobody:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="permission denied for procedure tick"
        ):
            nobody.execute("CALL pgpulse.tick()")
