"""pg_cron itself runs the tick: in the cluster's cron database (cron.database_name), the
migration scheduled `pgpulse-tick` every minute, run as pgpulse_ticker; we wait for its
next run (up to the next minute boundary) and look at what it did, with operators planted
in public by another role. The only slow test of the suite (<= 75 s)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.hijacks import hijack_calls, plant_hijacks
from tests.support.waiting import wait_for

REGION = "cron-test-1"  # this test's own rows in the shared cron database


@pytest.fixture
def cron_conn(cron_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
        conn.execute("DELETE FROM public.monitors WHERE preferred_region = %s", (REGION,))
        conn.execute("DELETE FROM pgpulse.outbox WHERE region = %s", (REGION,))
        conn.execute("DELETE FROM pgpulse.regions WHERE code = %s", (REGION,))


def test_migration_scheduled_the_tick_and_the_prune_jobs(cron_conn):
    jobs = {
        j["jobname"]: j
        for j in cron_conn.execute(
            "SELECT jobname, schedule, command, database, username, active FROM cron.job "
            "WHERE jobname LIKE 'pgpulse-%'"
        ).fetchall()
    }
    assert set(jobs) == {"pgpulse-tick", "pgpulse-prune"}
    assert jobs["pgpulse-tick"]["schedule"] == "* * * * *"
    assert "pgpulse.tick(" in jobs["pgpulse-tick"]["command"]
    assert "cron.job_run_details" in jobs["pgpulse-prune"]["command"]
    assert "pgpulse.tick_runs" in jobs["pgpulse-prune"]["command"]
    database = cron_conn.execute("SELECT current_database() AS d").fetchone()["d"]
    assert all(j["database"] == database and j["active"] for j in jobs.values())
    # the tick runs as a role without superuser rights, not as the migration's owner
    assert jobs["pgpulse-tick"]["username"] == "pgpulse_ticker"


def test_pg_cron_runs_pgpulse_tick(cron_conn, attacker_in_cron_db):
    with psycopg.connect(attacker_in_cron_db, autocommit=True) as mallory:
        plant_hijacks(mallory)
    cron_conn.execute("INSERT INTO pgpulse.regions (code) VALUES (%s)", (REGION,))
    [monitor] = cron_conn.execute(
        "INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, next_check_at) "
        "VALUES ('https://example.com/cron', 5, %s, now() - interval '5 seconds') "
        "RETURNING id, next_check_at",
        (REGION,),
    ).fetchall()
    since = cron_conn.execute("SELECT now() AS t").fetchone()["t"]
    jobid = cron_conn.execute(
        "SELECT jobid FROM cron.job WHERE jobname = 'pgpulse-tick'"
    ).fetchone()["jobid"]

    def finished_run():
        return cron_conn.execute(
            "SELECT status, return_message FROM cron.job_run_details "
            "WHERE jobid = %s AND start_time >= %s AND status IN ('succeeded', 'failed') "
            "ORDER BY start_time LIMIT 1",
            (jobid, since),
        ).fetchone()

    run = wait_for(finished_run, 75, "pg_cron to run pgpulse-tick")
    assert run["status"] == "succeeded", run["return_message"]

    tick_run = cron_conn.execute(
        "SELECT * FROM pgpulse.tick_runs WHERE trigger = 'pg_cron' AND started_at >= %s "
        "ORDER BY id LIMIT 1",
        (since,),
    ).fetchone()
    assert tick_run is not None
    assert tick_run["finished_at"] is not None
    # our monitor's slot was scheduled by pg_cron's tick (that run, or one just before it)
    [job] = cron_conn.execute(
        "SELECT * FROM pgpulse.outbox WHERE monitor_id = %s", (monitor["id"],)
    ).fetchall()
    assert (job["region"], job["scheduled_for"]) == (REGION, monitor["next_check_at"])
    # the planted operators never ran
    assert hijack_calls(cron_conn) == []
