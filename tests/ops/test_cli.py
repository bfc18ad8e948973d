"""The real `pgpulse` CLI: help everywhere, one-line errors, status and admin commands."""

import json

import psycopg
import pytest
from psycopg.rows import dict_row

from relay.queries import queries
from tests.support.cli import assert_one_line_error, pgpulse
from tests.support.seeding import add_monitor

COMMANDS = [
    "migrate",
    "tick",
    "relay",
    "status",
    "dlq",
    "region",
    "devserver",
    "demo",
    "bench",
    "http",
    "worker",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_everywhere(command, relay_env):
    result = pgpulse(command, "--help", env=relay_env)
    assert result.returncode == 0
    assert "usage: pgpulse" in result.stdout


def test_user_mistakes_get_one_line_errors(conn, regions, relay_env):
    assert_one_line_error(
        pgpulse("status", env=relay_env | {"DATABASE_URL": "mysql://x/y"}),
        "DATABASE_URL must start with postgresql://",
    )
    env = relay_env.copy()
    env.pop("DATABASE_URL")
    assert_one_line_error(pgpulse("tick", env=env), "DATABASE_URL is not set")
    assert_one_line_error(
        pgpulse("region", "enable", "mars-1", env=relay_env), "unknown region 'mars-1'"
    )
    assert_one_line_error(pgpulse("region", "add", "Bad_Code", env=relay_env), "bad region code")
    assert_one_line_error(
        pgpulse("region", "add", "sa-east-1", "--fallback", "nowhere", env=relay_env),
        "unknown fallback region",
    )
    assert_one_line_error(pgpulse("dlq", "retry", "not-a-uuid", env=relay_env), "bad job id")
    no_tokens = {k: v for k, v in relay_env.items() if "TOKEN" not in k}
    assert_one_line_error(
        pgpulse("relay", "--once", env=no_tokens),
        "no region in pgpulse.regions (enabled or not) has an Upstash endpoint",
    )
    assert_one_line_error(
        pgpulse("relay", "--once", env=relay_env | {"PGPULSE_BATCH_SIZE": "lots"}),
        "PGPULSE_BATCH_SIZE must be a number",
    )
    assert_one_line_error(
        pgpulse(
            "relay",
            "--once",
            env=relay_env
            | {
                "UPSTASH_REDIS_REST_URL_US_EAST_1": "not a url",
                "UPSTASH_REDIS_REST_URL_EU_WEST_1": "ftp://x",
            },
        ),
        "no region in pgpulse.regions (enabled or not) has an Upstash endpoint",
    )


def test_region_commands_change_routing_rows(conn, regions, relay_env):
    assert (
        pgpulse(
            "region", "add", "ap-south-1", "--fallback", "us-east-1", "--weight", "2", env=relay_env
        ).returncode
        == 0
    )
    assert pgpulse("region", "disable", "eu-west-1", env=relay_env).returncode == 0
    assert pgpulse("region", "set-default", "ap-south-1", env=relay_env).returncode == 0
    listed = json.loads(pgpulse("region", "list", "--json", env=relay_env).stdout)
    by_code = {r["code"]: r for r in listed}
    assert by_code["ap-south-1"]["is_default"] and by_code["ap-south-1"]["weight"] == 2
    assert not by_code["us-east-1"]["is_default"]
    assert not by_code["eu-west-1"]["enabled"]


def test_status_and_dlq(conn, regions, relay_env):
    add_monitor(conn)
    pgpulse("tick", env=relay_env)
    conn.execute("""INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality,
                      scheduled_for, deliver_at, expires_at, payload, attempts, last_error)
                    VALUES (gen_random_uuid(), gen_random_uuid(), 'us-east-1', 'high', now(), now(),
                            now() + interval '5 minutes', '{"url": "https://b.example"}', 5, 'ERR boom')""")
    status = json.loads(pgpulse("status", "--json", env=relay_env).stdout)
    assert status["dead_letters"] == 1
    assert status["recent_ticks"][0]["jobs_written"] == 1
    assert {r["code"] for r in status["regions"]} == {"us-east-1", "eu-west-1"}
    assert sum(b["waiting"] for b in status["backlog"]) == 1
    human = pgpulse("status", env=relay_env)
    assert "dead letters: 1" in human.stdout and "us-east-1" in human.stdout

    listed = json.loads(pgpulse("dlq", "list", "--json", env=relay_env).stdout)
    assert listed[0]["last_error"] == "ERR boom"
    retried = json.loads(
        pgpulse("dlq", "retry", listed[0]["job_id"], "--json", env=relay_env).stdout
    )
    assert retried == {"retried": 1, "kept": 0}
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 2
    assert json.loads(pgpulse("dlq", "purge", "--json", env=relay_env).stdout) == {"purged": 0}


def test_status_shows_the_job_that_ticks_this_database_not_another_ones(cron_db_url, relay_env):
    # pg_cron's database also holds a pgpulse-tick job of another database (another role's
    # cron.schedule_in_database); status and the facts read the one that ticks this database
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as cron:
        cron.execute("""INSERT INTO cron.job (jobid, schedule, command, nodename, nodeport,
                                              database, username, jobname)
                        VALUES (-77, '0 0 1 1 *', 'CALL pgpulse.tick()', '', 0,
                                'elsewhere', 'someone_else', 'pgpulse-tick')""")
        try:
            jobs = cron.execute(queries()["cron_job"], {"database": None}).fetchall()
            status = json.loads(
                pgpulse("status", "--json", env=relay_env | {"DATABASE_URL": cron_db_url}).stdout
            )
        finally:
            cron.execute("DELETE FROM cron.job WHERE jobid = -77")
    assert [job["schedule"] for job in jobs] == ["* * * * *"]
    assert status["pg_cron"]["schedule"] == "* * * * *"
