"""Issue 26 finding 1: objects a hostile role plants in public (tests.support.hijacks) never
run in the relay, run as the README's quick start runs it (one DATABASE_URL, a superuser):
not in the claim that builds each job's JSON, the push intents, the requeue and dead-letter
path, its upkeep, the alert rules' reads or the endpoints' facts. Jobs still come out right."""

from __future__ import annotations

import signal

import httpx
import redis

from relay.local.embedded import free_port
from tests.support.hijacks import hijack_calls, planted
from tests.support.queues import assert_exactly_once
from tests.support.regions import BY_CODE
from tests.support.seeding import insert_jobs, outbox_count
from tests.support.waiting import wait_for


def dead_letters(conn) -> list[dict]:
    return conn.execute(
        "SELECT job_id::text, attempts, last_error, payload FROM pgpulse.dead_letters"
    ).fetchall()


def test_planted_operators_never_run_in_the_relay(
    conn, db_url, regions, relays, queues, upstash, redis_server, schema_validator
):
    # jobs that fail on their own (WRONGTYPE in eu's low queue) take the requeue and
    # dead-letter path; alternated with good ones, batches of two: never most of a batch
    eu = redis.Redis.from_url(redis_server.url, db=BY_CODE["eu-west-1"].db)
    eu.set("pgpulse:jobs:eu-west-1:low", "not a list")
    good, dead = [], []
    for i in range(4):
        good += insert_jobs(conn, 1, "eu-west-1", tag=f"alive{i}", deliver_in_s=-60 + 2 * i)
        dead += insert_jobs(
            conn, 1, "eu-west-1", criticality="low", tag=f"dead{i}", deliver_in_s=-59 + 2 * i
        )
    good += insert_jobs(conn, 30, "us-east-1", tag="good")
    expired = insert_jobs(conn, 5, "ap-south-1", deliver_in_s=-90, expires_in_s=-1, tag="old")
    with planted(db_url):
        port = free_port()
        relay = relays.start(
            "--http",
            f"127.0.0.1:{port}",
            max_attempts=2,
            batch_size=2,
            alert_interval_s=0.2,
            facts_interval_s=0.2,
        )
        wait_for(
            lambda: len(dead_letters(conn)) == len(dead) and outbox_count(conn) == 0,
            60,
            "the good jobs delivered, the failing ones dead-lettered",
            on_timeout=relay.tail,
        )
        wait_for(lambda: relay.has_event("alert_evaluator_elected"), 30, "the alert evaluator")
        # the endpoints' facts, read with the planted objects in place
        wait_for(
            lambda: (
                f'pgpulse_dead_letters{{region="eu-west-1"}} {len(dead)}.0'
                in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            ),
            30,
            "the dead letters in /metrics",
        )
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        relay.signal(signal.SIGTERM)
        assert relay.wait(30) == 0
        # the pinned search_path: none of the planted objects ran, as whichever role
        calls = sorted({(c["called"], c["by_role"]) for c in hijack_calls(conn)})
        assert not calls, calls

    eu.delete("pgpulse:jobs:eu-west-1:low")
    eu.close()
    # and the results are right: each good job once, its JSON as the contract says
    for published in assert_exactly_once(queues, set(good)):
        schema_validator.validate(published.job)
        assert published.job["url"].startswith("https://") and published.job["attempt"] == 1
    rows = dead_letters(conn)
    assert {r["job_id"] for r in rows} == set(dead)
    assert all(r["attempts"] == 2 and "WRONGTYPE" in r["last_error"] for r in rows)
    assert all(r["payload"]["url"].startswith("https://dead") for r in rows)
    assert not set(expired) & {p.job["job_id"] for p in queues.all()}
    assert not any(r.startswith("database") for r in ready["reasons"]), ready
