"""pg_cron itself runs the tick: in the cluster's cron database (cron.database_name), the
migration scheduled `pgpulse-tick` every minute, run as pgpulse_ticker; we wait for its
next run (up to the next minute boundary, shared with the other tests that wait for one:
tests/support/cron_minute.py) and look at what it did, with operators planted in public by
another role."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.cron_minute import Scenario
from tests.support.hijacks import hijack_calls, planted
from tests.support.waiting import wait_for

REGION = "cron-test-1"  # this test's own rows in the shared cron database


@pytest.fixture
def cron_conn(cron_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
        remove_rows(conn)


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
    database = cron_conn.execute("SELECT current_database() AS d").fetchone()["d"]
    assert all(j["database"] == database and j["active"] for j in jobs.values())
    # every job runs as a role without superuser rights, never as the migration's owner
    assert {j["username"] for j in jobs.values()} == {"pgpulse_ticker"}
    assert (
        cron_conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'pgpulse_ticker'"
        ).fetchone()["rolsuper"]
        is False
    )


def test_the_prune_job_runs_as_the_ticker_and_deletes_only_its_own_old_runs(cron_conn):
    prune = cron_conn.execute(
        "SELECT command FROM cron.job WHERE jobname = 'pgpulse-prune'"
    ).fetchone()["command"]
    old = "now() - interval '8 days'"
    with cron_conn.transaction(force_rollback=True):
        cron_conn.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, username, database, command, status,"
            f" start_time, end_time) VALUES (9901, 9901, 'pgpulse_ticker', 'x', 'x', 'succeeded',"
            f" {old}, {old}), (9902, 9902, 'someone_else', 'x', 'x', 'succeeded', {old}, {old})"
        )
        cron_conn.execute("SET LOCAL ROLE pgpulse_ticker")
        cron_conn.execute(prune)
        cron_conn.execute("RESET ROLE")
        left = cron_conn.execute(
            "SELECT username FROM cron.job_run_details WHERE jobid IN (9901, 9902)"
        ).fetchall()
    assert left == [{"username": "someone_else"}]


class TickInTheCronDatabase(Scenario):
    """Operators planted in public by another role; a monitor due now, in this test's
    region."""

    def arrange(self) -> None:
        cron_db_url = self.request.getfixturevalue("cron_db_url")
        self.resources.enter_context(planted(cron_db_url))
        self.conn = self.resources.enter_context(
            psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row)
        )
        self.resources.callback(remove_rows, self.conn)
        self.conn.execute("INSERT INTO pgpulse.regions (code) VALUES (%s)", (REGION,))
        [self.monitor] = self.conn.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, preferred_region,"
            " next_check_at) VALUES ('https://example.com/cron', 5, %s,"
            " now() - interval '5 seconds') RETURNING id, next_check_at",
            (REGION,),
        ).fetchall()
        self.since = self.conn.execute("SELECT now() AS t").fetchone()["t"]


def remove_rows(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM public.monitors WHERE preferred_region = %s", (REGION,))
    conn.execute("DELETE FROM pgpulse.outbox WHERE region = %s", (REGION,))
    conn.execute("DELETE FROM pgpulse.regions WHERE code = %s", (REGION,))


@pytest.mark.slow
@pytest.mark.cron_minute(scenario=TickInTheCronDatabase)
def test_pg_cron_runs_pgpulse_tick(cron_minute):
    cron_conn, monitor, since = cron_minute.conn, cron_minute.monitor, cron_minute.since
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

    run = wait_for(finished_run, cron_minute.left(75), "pg_cron to run pgpulse-tick")
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
