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
            # nothing of the product's monitors, and of pgpulse's schedule the routing
            # fields only: the jobs it publishes carry their check
            ("SELECT url FROM public.monitors LIMIT 1", "permission denied for table monitors"),
            ("SELECT id FROM public.monitors LIMIT 1", "permission denied for table monitors"),
            (
                "SELECT check_spec FROM pgpulse.schedule LIMIT 1",
                "permission denied for table schedule",
            ),
            ("SELECT * FROM pgpulse.schedule LIMIT 1", "permission denied for table schedule"),
            (
                "UPDATE pgpulse.schedule SET next_check_at = now()",
                "permission denied for table schedule",
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
                "SELECT count(*) FROM (SELECT monitor_id, preferred_region, allow_fallback,"
                " check_regions FROM pgpulse.schedule) m"
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
            # it runs the tick and nothing else: no job of its own making, no slot moved
            (
                "INSERT INTO pgpulse.outbox (monitor_id, region, scheduled_for, deliver_at,"
                " expires_at, payload) SELECT gen_random_uuid(), 'us-east-1', now(), now(), now() + interval"
                " '1 minute', '{\"url\": \"http://169.254.169.254/\"}'",
                "permission denied for table outbox",
            ),
            (
                "UPDATE public.monitors SET next_check_at = now()",
                "permission denied for table monitors",
            ),
            (
                "UPDATE pgpulse.schedule SET next_check_at = now()",
                "permission denied for table schedule",
            ),
            (
                "SELECT * FROM pgpulse._tick_chunk(now(), 10, 0, '{}', NULL, true)",
                "permission denied for function _tick_chunk",
            ),
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


ESCALATION_PROBE = """
CREATE TABLE public.trigger_runs (who text, superuser boolean);
GRANT INSERT ON public.trigger_runs TO PUBLIC;
-- an ordinary product trigger, run as whoever writes the row: it records who that is
CREATE FUNCTION public.record_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trigger_runs
    SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN NEW;
END $$;
CREATE TRIGGER record_writer BEFORE UPDATE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION public.record_writer();
"""


def test_no_product_trigger_runs_through_pgpulse(conn, db_url, regions):
    """The product's own role, with no right on pgpulse's schema, inserts monitors and
    presses "check now"; pgpulse writes their jobs at once and ticks them, in its own
    schedule: the product's UPDATE trigger fires for the product's own writes only, never
    through pgpulse (run as the superuser that migrated, a trigger could otherwise ALTER
    ROLE ... SUPERUSER)."""
    conn.execute(sql_text("roles.sql"))
    conn.execute(LOGINS)
    conn.execute(ESCALATION_PROBE)
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop_app') "
        "THEN CREATE ROLE shop_app LOGIN; END IF; END $$"
    )
    conn.execute("GRANT SELECT, INSERT, UPDATE ON public.monitors TO shop_app")
    add_monitors(conn, 3)
    conn.execute("CALL pgpulse.tick(p_trigger => 'test')")  # a horizon written ahead
    conn.execute("TRUNCATE public.trigger_runs")
    with psycopg.connect(as_user(db_url, "shop_app"), autocommit=True) as shop:
        new = shop.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes) "
            "VALUES ('https://example.com/new', 1) RETURNING id"
        ).fetchone()[0]
        shop.execute(
            "UPDATE public.monitors SET next_check_at = now() - interval '1 second' WHERE id = %s",
            (new,),
        )
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM pgpulse.outbox WHERE monitor_id = %s", (new,)
        ).fetchone()["n"]
        > 0
    )
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    with psycopg.connect(as_user(db_url, "ticker_app"), autocommit=True) as ticker:
        ticker.execute("CALL pgpulse.tick(p_trigger => 'test')")
    assert (
        conn.execute(
            "SELECT monitors_claimed FROM pgpulse.tick_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()["monitors_claimed"]
        == 4
    )
    with psycopg.connect(as_user(db_url, "shop_app"), autocommit=True) as shop:
        shop.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes) "
            "VALUES ('https://example.com/newer', 1)"
        )
    # the probe saw the product's own UPDATE, and nothing pgpulse did
    runs = conn.execute("SELECT who, superuser FROM public.trigger_runs").fetchall()
    assert runs == [{"who": "shop_app", "superuser": False}]
