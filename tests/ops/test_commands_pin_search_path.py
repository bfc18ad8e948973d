"""Issue 26 finding 1, the operator's side: objects a hostile role plants in public
(tests.support.hijacks) never run in the `pgpulse` commands (tick, status, dlq, region,
maintenance, doctor) nor in `pgpulse http`'s facts and alert rules, run as the README's
quick start runs them (one DATABASE_URL, a superuser); their answers stay right."""

from __future__ import annotations

import json

import httpx

from tests.support.cli import pgpulse
from tests.support.hijacks import hijack_calls, planted
from tests.support.seeding import add_monitors, insert_jobs
from tests.support.waiting import wait_for


def run(env: dict[str, str], *args: str) -> str:
    result = pgpulse(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_planted_operators_never_run_in_the_ops_commands_or_endpoints(
    conn, db_url, regions, relay_env, start_service
):
    add_monitors(conn, 6, preferred_region="eu-west-1")
    dead = insert_jobs(conn, 1, "us-east-1", tag="dead")[0]
    conn.execute(
        "WITH gone AS (DELETE FROM pgpulse.outbox RETURNING *) "
        "INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality, "
        "scheduled_for, deliver_at, expires_at, payload, attempts, last_error) "
        "SELECT job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at, "
        "payload, 3, 'WRONGTYPE' FROM gone"
    )
    env = relay_env | {"PGPULSE_ALERT_INTERVAL_S": "0.2", "PGPULSE_FACTS_INTERVAL_S": "0.2"}
    with planted(db_url):
        tick = json.loads(run(env, "tick", "--json", "--lookahead", "0"))
        assert tick["jobs_written"] == 6 and tick["duration_ms"] >= 0
        status = json.loads(run(env, "status", "--json"))
        assert {r["region"]: r["waiting"] for r in status["backlog"]} == {
            "eu-west-1": 6,
            "us-east-1": 0,
        }
        assert status["dead_letters"] == 1 and status["recent_ticks"][0]["id"] == tick["id"]

        run(env, "region", "add", "ap-south-1", "--fallback", "us-east-1")
        run(env, "region", "disable", "ap-south-1")
        run(env, "region", "set-default", "eu-west-1")
        listed = {r["code"]: r for r in json.loads(run(env, "region", "list", "--json"))}
        assert listed["eu-west-1"]["is_default"] and listed["eu-west-1"]["waiting"] == 6
        assert not listed["ap-south-1"]["enabled"]

        assert [r["job_id"] for r in json.loads(run(env, "dlq", "list", "--json"))] == [dead]
        assert json.loads(run(env, "dlq", "retry", "--json")) == {"retried": 1, "kept": 0}
        assert json.loads(run(env, "dlq", "purge", "--json")) == {"purged": 0}  # retry moved it

        window = json.loads(
            run(
                env,
                *("maintenance", "add", "--weekly", "sat,sun", "--at", "02:00"),
                *("--for", "2 hours", "--tz", "Europe/Berlin", "--json"),
            )
        )["id"]
        windows = json.loads(run(env, "maintenance", "list", "--json"))
        assert [w["id"] for w in windows] == [window] and windows[0]["next_start_local"]
        run(env, "maintenance", "remove", str(window))

        doctor = pgpulse("doctor", "--json", env=env)
        assert '"database reachable"' in doctor.stdout, doctor.stderr

        # the endpoints' facts and the alert rules, read with the planted objects in place
        http = start_service("http", env=env)
        ready = wait_for(
            lambda: (
                (r := httpx.get(f"{http.url}/readyz").json())["last_tick_age_s"] is not None and r
            ),
            30,
            "the facts in /readyz",
        )
        assert ready["ready"], ready
        wait_for(lambda: http.has_event("alert_evaluator_elected"), 30, "the alert evaluator")
        wait_for(lambda: http.has_event("tick_finished", run_id=tick["id"]), 30, "its first read")
        http.stop()

        calls = sorted({(c["called"], c["by_role"]) for c in hijack_calls(conn)})
        assert not calls, calls
