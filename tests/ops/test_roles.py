"""Least privilege: the relay and the tick run as roles from sql/roles.sql that may do
what they need and nothing else; every read-only ops command works as the relay's role and
as the operator role pgpulse_monitor, and says what such a role may not see."""

import html
import json
import re
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from relay.ops.doctor import MONITOR_NEEDS
from relay.resources import sql_text
from tests.support.cli import pgpulse
from tests.support.dsn import as_user
from tests.support.ops import LOGINS
from tests.support.ops import doctor_checks as lines
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for


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
                "SELECT * FROM pgpulse._tick_chunk(now(), 10, 0, true)",
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
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roles_shop_app') "
        "THEN CREATE ROLE roles_shop_app LOGIN; END IF; END $$"
    )
    conn.execute("GRANT SELECT, INSERT, UPDATE ON public.monitors TO roles_shop_app")
    add_monitors(conn, 3)
    conn.execute("CALL pgpulse.tick(p_trigger => 'test')")  # a horizon written ahead
    conn.execute("TRUNCATE public.trigger_runs")
    with psycopg.connect(as_user(db_url, "roles_shop_app"), autocommit=True) as shop:
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
    with psycopg.connect(as_user(db_url, "roles_shop_app"), autocommit=True) as shop:
        shop.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes) "
            "VALUES ('https://example.com/newer', 1)"
        )
    # the probe saw the product's own UPDATE, and nothing pgpulse did
    runs = conn.execute("SELECT who, superuser FROM public.trigger_runs").fetchall()
    assert runs == [{"who": "roles_shop_app", "superuser": False}]


# ------------------------------------------------------ the ops commands as each role

OPS_ROLES = {"relay_app": "pgpulse_relay", "monitor_app": "pgpulse_monitor"}
FAST = {
    "PGPULSE_FACTS_INTERVAL_S": "0.2",
    "PGPULSE_ALERT_INTERVAL_S": "0.2",
    "PGPULSE_ALERT_DEADMAN_S": "1",  # the tick recorded below is older: the alert fires
    "PGPULSE_ALERT_BACKLOG_AGE_S": "3600",
}


@pytest.fixture(params=["pg_cron here", "pg_cron elsewhere"])
def ops_db(request, db_url, conn) -> Iterator[tuple[str, psycopg.Connection]]:
    """A migrated database with two regions and a pg_cron tick recorded: the cluster's
    pg_cron database itself (shared: what this adds goes again), or a database pg_cron
    ticks from there."""
    if request.param == "pg_cron elsewhere":
        setup(conn)
        yield db_url, conn
        return
    cron_db_url = request.getfixturevalue("cron_db_url")
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as cron:
        added = setup(cron)
        try:
            yield cron_db_url, cron
        finally:
            cron.execute("DELETE FROM pgpulse.tick_runs WHERE budget_ms = 45001")
            cron.execute("DELETE FROM pgpulse.regions WHERE code = ANY (%s)", (added,))


def setup(conn) -> list[str]:
    conn.execute(LOGINS)
    added = [
        r["code"]
        for r in conn.execute("""
            INSERT INTO pgpulse.regions (code, is_default)
            VALUES ('us-east-1', NOT EXISTS (SELECT 1 FROM pgpulse.regions WHERE is_default)),
                   ('eu-west-1', false)
            ON CONFLICT DO NOTHING RETURNING code""")
    ]
    # a tick pg_cron started, finished 5 s ago: recent for doctor, old for a 1 s dead-man
    # (its odd budget tells it from pg_cron's own ticks of the shared cron database)
    conn.execute("""
        INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms)
        VALUES ('pg_cron', now() - interval '6 s', now() - interval '5 s', 45001, 60000)""")
    return added


@pytest.mark.parametrize("role", list(OPS_ROLES))
def test_every_read_only_ops_command_works_as_the_relay_and_the_monitor_role(
    role, ops_db, relay_env, start_service, receiver
):
    """doctor, status, and `pgpulse http`'s status page, /readyz, /metrics and built-in
    alerts, as a login role IN ROLE pgpulse_relay or pgpulse_monitor: what the role may not
    see of pg_cron (its schema here; its database elsewhere) is a warning that names what
    an admin runs, never a FAIL, a crash, or "not in this database" where it is."""
    url, conn = ops_db
    here = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS yes"
    ).fetchone()["yes"]
    database = conn.execute("SELECT current_database() AS db").fetchone()["db"]
    env = relay_env | {"DATABASE_URL": as_user(url, role)}

    result = pgpulse("doctor", env=env)
    checks = lines(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in checks.values() if c[0] == "FAIL"], result.stdout
    if role == "monitor_app":
        assert checks["role rights"][0] == "ok"
        assert checks["role rights"][1].startswith("read-only (pgpulse_monitor)")
        assert checks["migrated"][0] == "ok"  # it may read the revision
    else:
        assert checks["role rights"] == ("ok", "everything the relay reads and writes")
    verdict, detail = checks["pg_cron"]
    assert verdict == "warn"
    admin = (
        "SELECT schedule, active FROM cron.job WHERE jobname = 'pgpulse-tick' "
        f"AND database = '{database}'"
    )
    if here:
        assert detail.startswith(
            "pg_cron is in this database, and this role may not read its jobs (schema cron;"
        ), detail
        assert f"an admin checks with `{admin}`" in detail
    else:
        assert "may not read cron.database_name" in detail, detail
    assert re.search(r"the latest tick here that pg_cron started began \d+ s ago$", detail)
    # the product's table is not these roles' to read: said, with what to run instead
    assert (
        checks["scheduling"][0] == "warn"
        and "pgpulse resync --dry-run" in (checks["scheduling"][1])
    )

    status = pgpulse("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    snapshot = json.loads(status.stdout)
    assert snapshot["pg_cron"] is None
    note = snapshot["pg_cron_note"]
    if here:
        assert note.startswith("pg_cron is in this database, and this role may not read its jobs")
    else:
        assert note.startswith("pg_cron is not in this database (pg_cron in another one may")
    assert re.search(r"the latest tick here that pg_cron started began \d+ s ago$", note)
    human = pgpulse("status", env=env)
    assert human.returncode == 0 and f"pg_cron job: {note.split(';')[0]};" in human.stdout

    service = start_service("http", env=env | FAST | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url})
    ready = httpx.get(service.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    wait_for(
        lambda: "pgpulse_database_up 1.0" in httpx.get(service.url + "/metrics").text,
        10,
        "the facts in /metrics",
    )
    page = httpx.get(service.url + "/", timeout=10).text
    shown = html.unescape(re.sub("<[^>]+>", "", re.search(r'id="cron">(.*?)</div>', page)[1]))
    assert shown.startswith(f"pg_cron: {note.split(';')[0]};"), shown
    # the alert rules run as this role: it takes the evaluator's lease, and they fire
    wait_for(lambda: receiver.of("deadman", "firing"), 20, "the dead-man alert")
    holder = conn.execute("SELECT holder FROM pgpulse.leases").fetchone()["holder"]
    assert holder.split(":")[1] == str(service.pid)
    service.stop()
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.leases").fetchone()["n"] == 0
    assert '"level": "error"' not in service.output


def test_the_monitor_role_reads_what_doctor_checks_and_no_check(conn, db_url, regions):
    """pgpulse_monitor's grants are relay/ops/doctor.py MONITOR_NEEDS (plus Alembic's table):
    never a job's check (payload), nothing of the product's monitors, no write but the
    alert evaluator's lease."""
    granted = conn.execute("""
        SELECT table_schema || '.' || table_name AS tbl, privilege_type, NULL AS col
          FROM information_schema.table_privileges WHERE grantee = 'pgpulse_monitor'
           AND table_name <> 'alembic_version'
        UNION ALL
        SELECT table_schema || '.' || table_name, privilege_type, column_name
          FROM information_schema.column_privileges c WHERE grantee = 'pgpulse_monitor'
           AND NOT EXISTS (SELECT 1 FROM information_schema.table_privileges t
                            WHERE t.grantee = c.grantee AND t.table_schema = c.table_schema
                              AND t.table_name = c.table_name
                              AND t.privilege_type = c.privilege_type)""").fetchall()
    expected = {
        (table, privilege, column)
        for table, privileges in MONITOR_NEEDS.items()
        for privilege, columns in privileges.items()
        for column in (columns or [None])
    }
    assert {(g["tbl"], g["privilege_type"], g["col"]) for g in granted} == expected
    conn.execute(LOGINS)
    add_monitors(conn, 2)
    conn.execute("CALL pgpulse.tick(p_trigger => 'test')")
    with psycopg.connect(as_user(db_url, "monitor_app"), autocommit=True) as monitor:
        for statement, reason in (
            ("SELECT payload FROM pgpulse.outbox", "permission denied for table outbox"),
            ("SELECT * FROM pgpulse.dead_letters", "permission denied for table dead_letters"),
            ("SELECT url FROM public.monitors", "permission denied for table monitors"),
            ("SELECT check_spec FROM pgpulse.schedule", "permission denied for table schedule"),
            ("DELETE FROM pgpulse.outbox", "permission denied for table outbox"),
            ("UPDATE pgpulse.regions SET healthy = false", "permission denied for table regions"),
            (
                "INSERT INTO pgpulse.tick_runs (trigger, budget_ms, lookahead_ms)"
                " VALUES ('x', 1, 1)",
                "permission denied for table tick_runs",
            ),
            ("CALL pgpulse.tick()", "permission denied for procedure tick"),
            ("SELECT pgpulse.check_now('x')", "permission denied for function check_now"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=reason):
                monitor.execute(statement)
        assert monitor.execute("SELECT count(*) FROM pgpulse.outbox").fetchone()[0] == 2
