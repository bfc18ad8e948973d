"""`pgpulse doctor` through the real CLI: one line per check with its verdict, exit status 1
on any failure, --json, and no secret in its output."""

from __future__ import annotations

import json
import re

import psycopg
from psycopg.rows import dict_row

from relay.local.embedded import CRON_DATABASE, free_port
from relay.ops.doctor import RELAY_NEEDS
from tests.support.cli import pgpulse
from tests.support.dsn import with_password
from tests.support.ops import doctor_checks as lines

SECRETS = {
    "CRON_SECRET": "cron-secret-7d1e",
    "PGPULSE_ALERT_WEBHOOK_URL": "https://hooks.example/T0/B0/hook-secret-91",
}


def test_a_working_install_passes_every_check(conn, regions, relay_env, cron_db_url):
    env = (
        relay_env
        | SECRETS
        | {"DATABASE_URL": with_password(relay_env["DATABASE_URL"], "pw-5ecret")}
    )
    conn.execute(
        "INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms) "
        "VALUES ('pg_cron', now() - interval '2 s', now(), 45000, 60000)"
    )
    result = pgpulse("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result.stdout)
    assert list(checks) == [
        "settings",
        "database reachable",
        "pooler",
        "migrated",
        "role rights",
        "pg_cron",
        "recent tick",
        "scheduling",
        "clock skew",
        "region eu-west-1",
        "clock skew region eu-west-1",
        "workers eu-west-1",
        "region us-east-1",
        "clock skew region us-east-1",
        "workers us-east-1",
    ]
    for name in (
        "settings",
        "database reachable",
        "pooler",
        "migrated",
        "recent tick",
        "clock skew",
        "region eu-west-1",
        "clock skew region eu-west-1",
        "workers eu-west-1",
        "region us-east-1",
        "clock skew region us-east-1",
        "workers us-east-1",
    ):
        assert checks[name][0] == "ok", (name, checks[name])
    assert checks["role rights"] == ("warn", checks["role rights"][1])  # tests connect as superuser
    assert checks["pg_cron"][0] == "warn"  # pg_cron lives in another database, not ticking this one
    assert "no pgpulse-tick job ticks this database" in checks["pg_cron"][1]
    assert (
        "PING PONG" in checks["region us-east-1"][1]
        and "push script" in checks["region us-east-1"][1]
    )
    assert "at revision" in checks["migrated"][1]
    assert checks["pooler"][1] == "a direct connection: no pooler in between"
    assert "DATABASE_URL=postgresql://postgres:***@" in checks["settings"][1]
    assert "cron_secret=set (hidden)" in checks["settings"][1]
    for secret in (*SECRETS.values(), "pw-5ecret", "tok-us-4b7c9e1d", "tok-eu-8f2a6c3b"):
        assert secret not in result.stdout + result.stderr

    as_json = pgpulse("doctor", "--json", env=env)
    assert as_json.returncode == 0
    record = json.loads(as_json.stdout)
    assert record["ok"] is True
    assert [c["name"] for c in record["checks"]] == list(checks)


def test_each_misconfiguration_fails_its_check_and_the_exit_status(
    conn, regions, relay_env, pg_server
):
    # a refused token and a region without an endpoint
    env = relay_env | {"UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": "wrong-token"}
    conn.execute("INSERT INTO pgpulse.regions (code) VALUES ('ap-south-1')")
    result = pgpulse("doctor", env=env)
    assert result.returncode == 1
    checks = lines(result.stdout)
    assert (
        checks["region eu-west-1"][0] == "FAIL" and "token refused" in checks["region eu-west-1"][1]
    )
    assert "wrong-token" not in result.stdout
    assert (
        checks["region ap-south-1"][0] == "FAIL"
        and "UPSTASH_REDIS_REST_URL_AP_SOUTH_1" in checks["region ap-south-1"][1]
    )
    assert checks["region us-east-1"][0] == "ok"
    assert checks["recent tick"] == ("FAIL", "no tick has ever finished")

    # a role that may not do what the relay does
    conn.execute("DROP ROLE IF EXISTS doctor_probe")
    conn.execute("CREATE ROLE doctor_probe LOGIN")
    conn.execute("GRANT USAGE ON SCHEMA pgpulse TO doctor_probe")
    conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA pgpulse TO doctor_probe")
    weak = relay_env["DATABASE_URL"].replace("postgresql://postgres@", "postgresql://doctor_probe@")
    try:
        result = pgpulse("doctor", "--json", env=relay_env | {"DATABASE_URL": weak})
        assert result.stdout, result.stderr
        record = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        assert result.returncode == 1 and json.loads(result.stdout)["ok"] is False
        assert record["role rights"]["verdict"] == "FAIL"
        assert "DELETE on pgpulse.outbox" in record["role rights"]["detail"]
    finally:
        conn.execute("DROP OWNED BY doctor_probe")
        conn.execute("DROP ROLE doctor_probe")

    # a database pgpulse was never migrated into
    result = pgpulse("doctor", env=relay_env | {"DATABASE_URL": pg_server.dsn("postgres")})
    checks = lines(result.stdout)
    assert result.returncode == 1
    assert checks["migrated"][0] == "FAIL" and "pgpulse migrate" in checks["migrated"][1]
    assert checks["regions"][0] == "skip"

    # no database at all, and a bad setting: each its own line, the rest skipped, no hang
    gone = f"postgresql://postgres:pw-gone@127.0.0.1:{free_port()}/nothing"
    result = pgpulse(
        "doctor", env=relay_env | {"DATABASE_URL": gone, "PGPULSE_BATCH_SIZE": "lots"}, timeout=60
    )
    checks = lines(result.stdout)
    assert result.returncode == 1
    assert checks["settings"] == ("FAIL", "PGPULSE_BATCH_SIZE must be a number, got 'lots'")
    assert checks["database reachable"][0] == "FAIL" and "pw-gone" not in result.stdout
    assert {checks[n][0] for n in ("pooler", "migrated", "pg_cron", "clock skew", "regions")} == {
        "skip"
    }


def test_pg_cron_job_state_is_checked(cron_db_url, relay_env):
    env = relay_env | {"DATABASE_URL": cron_db_url}
    checks = lines(pgpulse("doctor", env=env).stdout)
    assert checks["pg_cron"][0] in ("ok", "warn") and "pgpulse-tick" in checks["pg_cron"][1]
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as cron:
        jobid = cron.execute(
            "SELECT jobid FROM cron.job WHERE jobname = 'pgpulse-tick'"
        ).fetchone()["jobid"]
        # the newest run failed (dated ahead so that pg_cron's own runs stay older)
        cron.execute(
            """INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username,
                            command, status, return_message, start_time, end_time)
                        VALUES (%s, -4242, 0, current_database(), 'postgres', 'CALL pgpulse.tick()',
                                'failed', 'ERROR:  permission denied for table monitors',
                                now() + interval '1 hour', now() + interval '1 hour')""",
            (jobid,),
        )
        try:
            result = pgpulse("doctor", env=env)
        finally:
            cron.execute("DELETE FROM cron.job_run_details WHERE runid = -4242")
    checks = lines(result.stdout)
    assert result.returncode == 1
    assert checks["pg_cron"] == (
        "FAIL",
        "job pgpulse-tick's last run failed: ERROR:  permission denied for table monitors",
    )


def test_the_relay_role_has_every_right_doctor_checks(
    conn, db_url, regions, relay_env, cron_db_url
):
    """Its grants are column grants (UPDATE (healthy) on regions, ...): doctor counts them."""
    conn.execute("DROP ROLE IF EXISTS doctor_relay")
    conn.execute("CREATE ROLE doctor_relay LOGIN IN ROLE pgpulse_relay")
    try:
        # a pg_cron tick was recorded here: what this database shows of pg_cron
        conn.execute(
            "INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms,"
            " lookahead_ms) VALUES ('pg_cron', now() - interval '30 s', now(), 45000, 60000)"
        )
        env = relay_env | {"DATABASE_URL": db_url.replace("postgres@", "doctor_relay@")}
        checks = lines(pgpulse("doctor", env=env).stdout)
        assert checks["role rights"] == ("ok", "everything the relay reads and writes")
        # the relay's role reads the schema's revision (a relay of another release refuses it)
        assert checks["migrated"][0] == "ok", checks["migrated"]
        # pg_cron is in another database, and this role may not read where: it says how to tell it
        verdict, detail = checks["pg_cron"]
        assert verdict == "warn" and "may not read cron.database_name" in detail, detail
        assert "set PGPULSE_CRON_DATABASE=NAME" in detail
        assert re.search(r"the latest tick here that pg_cron started began \d+ s ago$", detail)
        told = lines(pgpulse("doctor", env=env | {"PGPULSE_CRON_DATABASE": CRON_DATABASE}).stdout)
        # told where, it looks there; this role may not read pg_cron's schema: how an admin can
        database = conn.execute("SELECT current_database() AS db").fetchone()["db"]
        verdict, detail = told["pg_cron"]
        assert verdict == "warn" and detail.startswith(
            f"pg_cron runs in database {CRON_DATABASE}, and this role cannot read its jobs there "
            "(permission denied for schema cron): an admin checks there with `SELECT schedule, "
            f"active FROM cron.job WHERE jobname = 'pgpulse-tick' AND database = '{database}'`"
        ), detail
    finally:
        conn.execute("DROP ROLE doctor_relay")

    # doctor checks what roles.sql grants the relay's role, no more and no less
    granted = conn.execute("""
        SELECT table_schema || '.' || table_name AS tbl, privilege_type, NULL AS col
          FROM information_schema.table_privileges WHERE grantee = 'pgpulse_relay'
        UNION ALL
        SELECT table_schema || '.' || table_name, privilege_type, column_name
          FROM information_schema.column_privileges c WHERE grantee = 'pgpulse_relay'
           AND NOT EXISTS (SELECT 1 FROM information_schema.table_privileges t
                            WHERE t.grantee = c.grantee AND t.table_schema = c.table_schema
                              AND t.table_name = c.table_name
                              AND t.privilege_type = c.privilege_type)""").fetchall()
    expected = {
        (table, privilege, column)
        for table, privileges in RELAY_NEEDS.items()
        for privilege, columns in privileges.items()
        for column in (columns or [None])
    }
    assert {(g["tbl"], g["privilege_type"], g["col"]) for g in granted} == expected, (
        "relay/ops/doctor.py RELAY_NEEDS and sql/roles.sql's pgpulse_relay grants differ"
    )


def test_pg_cron_in_another_database_is_checked_there(conn, db_url, cron_db_url, relay_env):
    """The cluster's pg_cron lives in its cron database; this database is ticked from there
    (cron.schedule_in_database), as on RDS and Cloud SQL."""
    env = relay_env | {"DATABASE_URL": db_url}
    checks = lines(pgpulse("doctor", env=env).stdout)
    database = conn.execute("SELECT current_database() AS db").fetchone()["db"]
    assert checks["pg_cron"] == (
        "warn",
        (
            f"no pgpulse-tick job ticks this database (pg_cron's database {CRON_DATABASE}): "
            f"`pgpulse migrate --cron-database {CRON_DATABASE}` schedules it, or something else must "
            "run `pgpulse tick` every minute; no tick here has come from pg_cron yet"
        ),
    )
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as cron:
        # yearly: it never fires during the test
        jobid = cron.execute(
            "SELECT cron.schedule_in_database('pgpulse-tick', '0 0 1 1 *', "
            "'CALL pgpulse.tick()', %s) AS id",
            (database,),
        ).fetchone()["id"]
        try:
            checks = lines(pgpulse("doctor", env=env).stdout)
        finally:
            cron.execute("SELECT cron.unschedule(%s)", (jobid,))
    assert checks["pg_cron"] == (
        "warn",
        f"job pgpulse-tick (pg_cron's database {CRON_DATABASE}) (0 0 1 1 *) has not run yet",
    )
