"""Least privilege: the relay and the tick run as roles from sql/roles.sql that may do
what they need and nothing else."""

import psycopg
import pytest

from relay.queries import sql_file
from tests.ops.conftest import pgpulse

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


def as_user(dsn: str, user: str) -> str:
    return dsn.replace("postgres@", f"{user}@")


def test_relay_and_ticker_roles_do_their_job_and_no_more(conn, db_url, regions, relay_env):
    conn.execute(sql_file("roles.sql"))
    conn.execute(LOGINS)
    conn.execute("INSERT INTO public.monitors (url, next_check_at) "
                 "SELECT 'https://example.com/' || g, now() FROM generate_series(1, 30) g")

    ticked = pgpulse("tick", "--json", env=relay_env | {"DATABASE_URL": as_user(db_url, "ticker_app")})
    assert ticked.returncode == 0, ticked.stderr
    relayed = pgpulse("relay", "--once", "--json",
                      env=relay_env | {"DATABASE_URL": as_user(db_url, "relay_app")})
    assert relayed.returncode == 0, relayed.stderr
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0
    assert '"published": 30' in relayed.stdout

    with psycopg.connect(as_user(db_url, "relay_app"), autocommit=True) as relay_conn:
        for statement in ("UPDATE public.monitors SET url = 'https://evil.example'",
                          "DELETE FROM pgpulse.regions",
                          "UPDATE pgpulse.regions SET is_default = true",
                          "INSERT INTO public.monitors (url) VALUES ('https://x.example')",
                          "DELETE FROM pgpulse.tick_runs",
                          "CALL pgpulse.tick()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                relay_conn.execute(statement)
        # what it needs: region health
        relay_conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
    with psycopg.connect(as_user(db_url, "ticker_app"), autocommit=True) as ticker_conn:
        for statement in ("DELETE FROM pgpulse.outbox", "UPDATE public.monitors SET url = 'https://x.example'",
                          "DELETE FROM public.monitors"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ticker_conn.execute(statement)
