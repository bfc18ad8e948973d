"""The real `pgpulse` CLI in a subprocess, as an operator runs it: `migrate`, then
`tick --json` over seeded due monitors; and what a bad DATABASE_URL looks like."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from relay.local.embedded import EmbeddedPostgres
from tests.support.cli import assert_one_line_error, pgpulse

PASSWORD = "pw-Zq8xv3LmT"


@pytest.fixture
def fresh_db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """An empty database, not migrated."""
    name = f"cli{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


SEED = """
INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true);
INSERT INTO pgpulse.regions (code) VALUES ('ap-south-1');
INSERT INTO pgpulse.regions (code, fallback_region, healthy) VALUES ('eu-west-1', 'ap-south-1', false);
-- due now, 5-minute interval: one slot each
INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, allow_fallback,
                             is_active, next_check_at)
SELECT 'https://example.com/' || g, 5, s.preferred, s.allow_fallback, s.active,
       now() - s.due_ago
  FROM (VALUES ('us-east-1', true, true, interval '10 s', 20),   -- stays on us-east-1
               ('eu-west-1', true, true, interval '20 s', 30),   -- unhealthy: its fallback
               ('eu-west-1', false, true, interval '20 s', 10),  -- no fallback: waits there
               (NULL, true, true, interval '40 s', 60),          -- round-robin (2 healthy)
               (NULL, true, true, interval '-3 min', 5),         -- not due yet
               (NULL, true, false, interval '10 s', 5)           -- inactive
       ) s(preferred, allow_fallback, active, due_ago, n),
       generate_series(1, s.n) g;
"""


def test_migrate_then_tick_json_writes_one_routed_job_per_due_monitor(fresh_db):
    migrated = pgpulse("migrate", database_url=fresh_db)
    assert migrated.returncode == 0, migrated.stderr
    assert "upgraded to head" in migrated.stdout
    assert "pg_cron is not available" in migrated.stderr  # and says how to tick instead

    with psycopg.connect(fresh_db, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(SEED)
        due = {
            r["id"]: r
            for r in conn.execute(
                "SELECT m.id, m.preferred_region, m.allow_fallback, s.next_check_at"
                " FROM public.monitors m JOIN pgpulse.monitor_schedule s ON s.monitor_id = m.id"
                " WHERE s.is_active AND s.next_check_at <= now()"
            ).fetchall()
        }
        assert len(due) == 120

        ticked = pgpulse("tick", "--json", "--chunk", "25", database_url=fresh_db)
        assert ticked.returncode == 0, ticked.stderr
        record = json.loads(ticked.stdout)
        assert record["trigger"] == "cli"
        assert (record["monitors_claimed"], record["jobs_written"], record["chunks"]) == (
            120,
            120,
            5,
        )
        assert (record["cut_short"], record["unrouted"]) == (False, 0)
        assert record["finished_at"] is not None

        jobs = conn.execute("SELECT * FROM pgpulse.outbox").fetchall()
        assert len(jobs) == 120
        assert {j["monitor_id"] for j in jobs} == set(due)
        for job in jobs:
            assert (
                job["scheduled_for"] == job["deliver_at"] == due[job["monitor_id"]]["next_check_at"]
            )

        def routes(preferred, allow_fallback):
            return Counter(
                j["region"]
                for j in jobs
                if due[j["monitor_id"]]["preferred_region"] == preferred
                and due[j["monitor_id"]]["allow_fallback"] == allow_fallback
            )

        assert routes("us-east-1", True) == {"us-east-1": 20}
        assert routes("eu-west-1", True) == {"ap-south-1": 30}
        assert routes("eu-west-1", False) == {"eu-west-1": 10}
        assert routes(None, True) == {"us-east-1": 30, "ap-south-1": 30}

        # a second tick right away has nothing left to do
        again = pgpulse("tick", "--json", database_url=fresh_db)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["jobs_written"] == 0
        assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 120
        # the ticks moved pgpulse's schedule on, and left the product's rows as they were
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM pgpulse.monitor_schedule WHERE last_scheduled_at IS NOT NULL"
            ).fetchone()["n"]
            == 120
        )
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM public.monitors WHERE last_scheduled_at IS NOT NULL"
            ).fetchone()["n"]
            == 0
        )


def test_tick_without_json_prints_one_readable_line(db_url):
    shown = pgpulse("tick", database_url=db_url)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("tick ") and "0 monitors, 0 jobs" in shown.stdout
    assert len(shown.stdout.strip().splitlines()) == 1


def _assert_one_line_error(proc: subprocess.CompletedProcess, command: str) -> str:
    """Nothing on stdout, only the error line on stderr, and no password in it."""
    err = assert_one_line_error(proc, command=command)
    assert proc.stdout == "" and proc.stderr.strip() == err
    assert PASSWORD not in err
    return err


@pytest.mark.parametrize("command", ["tick", "migrate"])
def test_unreachable_database_is_a_one_line_error_without_the_password(command):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/pgpulse"
    err = _assert_one_line_error(
        pgpulse(command, "--json" if command == "tick" else "--revision=head", database_url=url),
        command,
    )
    assert "127.0.0.1" in err


@pytest.mark.parametrize("command", ["tick", "migrate"])
def test_missing_database_is_a_one_line_error_without_the_password(pg_server, command):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg_server.port}/no_such_db"
    err = _assert_one_line_error(pgpulse(command, database_url=url), command)
    assert "no_such_db" in err


@pytest.mark.parametrize("url", ["", "mysql://root:" + PASSWORD + "@localhost/db"])
def test_malformed_database_url_is_a_one_line_error(url):
    err = _assert_one_line_error(pgpulse("tick", database_url=url), "tick")
    assert "DATABASE_URL" in err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--chunk", "0"], "chunk must be 1 to 100000 monitors, not 0"),
        (["--budget", "0"], "budget must be more than 0 and at most 55 seconds"),
        (["--budget", "2592000"], "budget must be more than 0 and at most 55 seconds"),
        (["--lookahead", "-1"], "lookahead must be 0 to 10 minutes"),
    ],
)
def test_bad_tick_arguments_are_a_one_line_error(db_url, args, problem):
    err = _assert_one_line_error(pgpulse("tick", *args, database_url=db_url), "tick")
    assert problem in err
