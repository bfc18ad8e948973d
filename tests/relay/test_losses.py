"""Issue 9: nothing is lost on the way to the queues. Each test sets up a fault a real
Upstash database (or a real machine) produces, with real relay processes, the dev server on
a real redis-server and a real PostgreSQL, and checks that every job is delivered once,
or waits, or is counted, and that the relay says so."""

from __future__ import annotations

import collections
import json
import random
import signal
import time

import pytest
import redis

from relay.queries import queries
from tests.support.activity import open_claims
from tests.support.cli import pgpulse
from tests.support.queues import assert_exactly_once
from tests.support.regions import BY_CODE, REGIONS, take_down
from tests.support.seeding import (
    insert_jobs,
    insert_monitors,
    outbox_count,
    outbox_ids,
    region_row,
    tick,
)
from tests.support.waiting import wait_for


def claimed_by_others(conn, region: str) -> int:
    """Outbox rows of a region that another transaction holds (claimed, not committed)."""
    with conn.transaction():
        total = conn.execute(
            "SELECT count(*) AS n FROM pgpulse.outbox WHERE region = %s", (region,)
        ).fetchone()["n"]
        free = conn.execute(
            """
            SELECT count(*) AS n FROM (SELECT 1 FROM pgpulse.outbox WHERE region = %s
                                          FOR UPDATE SKIP LOCKED) s""",
            (region,),
        ).fetchone()["n"]
    return total - free


def dedup_keys(redis_server, region: str) -> dict[str, int]:
    """The dedup keys in a region's database, with their TTLs in seconds."""
    client = redis.Redis.from_url(redis_server.url, db=BY_CODE[region].db)
    try:
        return {
            key.decode(): client.ttl(key)
            for key in client.scan_iter(match="pgpulse:dedup:*", count=1000)
        }
    finally:
        client.close()


def dead_letters(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"]


# ---------------------------------------------------------------- 1. no marker without a push


def test_a_push_that_failed_leaves_no_dedup_marker(conn, regions, relays, queues, redis_server):
    # a queue key of the wrong type (a real WRONGTYPE inside the push script, as a list over
    # Upstash's record size refuses the push): those jobs fail, the others go through
    us = redis.Redis.from_url(redis_server.url, db=BY_CODE["us-east-1"].db)
    us.set("pgpulse:jobs:us-east-1:critical", "not a list")
    blocked = insert_jobs(conn, 10, "us-east-1", criticality="critical", tag="wrongtype")
    fine = insert_jobs(conn, 30, "us-east-1", tag="fine")
    relay = relays.start("--once", "--json")
    code = relay.wait(60)
    totals = json.loads(relay.stdout())
    assert totals["failed"] == 10 and totals["published"] == 30, totals
    rows = conn.execute("SELECT job_id::text, attempts, last_error FROM pgpulse.outbox").fetchall()
    assert {r["job_id"] for r in rows} == set(blocked)
    assert all(r["attempts"] == 1 and "WRONGTYPE" in r["last_error"] for r in rows)
    keys = dedup_keys(redis_server, "us-east-1")
    assert not {f"pgpulse:dedup:{j}" for j in blocked} & keys.keys(), "a failed push left a marker"
    assert code == 1, relay.tail()  # jobs wait for a later attempt: --once says so

    # the key repaired: the retry pushes them (not "duplicates" that vanish)
    us.delete("pgpulse:jobs:us-east-1:critical")
    us.close()
    conn.execute("UPDATE pgpulse.outbox SET deliver_at = now()")
    totals = relays.run_once()
    assert totals["published"] == 10 and totals["duplicates"] == 0, totals
    assert outbox_count(conn) == 0
    assert_exactly_once(queues, set(blocked) | set(fine))


# ---------------------------------------------------------------- 2. dedup keys live as long as the job


def test_dedup_keys_expire_with_their_jobs_and_nothing_is_pushed_late(
    conn, regions, relays, queues, upstash, redis_server
):
    five_minutes = insert_jobs(conn, 200, "eu-west-1", expires_in_s=300, tag="five")
    one_minute = insert_jobs(conn, 50, "eu-west-1", expires_in_s=60, tag="one")
    totals = relays.run_once(dedup_margin_s=60)
    assert totals["published"] == 250, totals
    keys = dedup_keys(redis_server, "eu-west-1")
    assert len(keys) == 250
    ttl = {key.rsplit(":", 1)[1]: t for key, t in keys.items()}
    assert all(300 < ttl[j] <= 300 + 60 for j in five_minutes), sorted(ttl.values())[-3:]
    assert all(60 < ttl[j] <= 60 + 60 for j in one_minute)
    assert max(keys.values()) <= 15 * 60  # the floor

    # a job that expires while its request is on the way is not pushed after its key
    # could have expired: the region's clock decides, and the job counts as expired
    late = insert_jobs(conn, 5, "ap-south-1", expires_in_s=2, tag="late")
    upstash.set_faults({"latency_ms": 3500}, tokens=[BY_CODE["ap-south-1"].token])
    totals = relays.run_once(publish_timeout_s=10)
    assert totals["expired"] == 5 and totals["published"] == 0, totals
    assert outbox_count(conn) == 0
    ap = redis.Redis.from_url(redis_server.url, db=BY_CODE["ap-south-1"].db)
    assert ap.llen("pgpulse:jobs:ap-south-1:normal") == 0
    assert not any(ap.exists(f"pgpulse:dedup:{j}") for j in late)
    ap.close()


# ---------------------------------------------------------------- 3. inline region errors are an outage


@pytest.mark.timeout(120)
# the other region-level texts (READONLY, OOM, record size...): tests/unit/test_region_errors.py
@pytest.mark.parametrize(
    "error",
    [
        "ERR DB capacity quota exceeded",
        "READONLY You can't write against a read only replica.",
    ],
)
def test_a_region_refusing_writes_inside_http_200_is_down(
    conn, regions, relays, queues, upstash, error
):
    eu = BY_CODE["eu-west-1"]
    upstash.set_faults({"inline_error_rate": 1.0, "inline_error": error}, tokens=[eu.token])
    rerouted = insert_jobs(conn, 20, "eu-west-1", tag="quota")
    pinned = insert_jobs(conn, 10, "eu-west-1", allow_fallback=False, tag="pinned")
    relay = relays.start(breaker_failures=3, breaker_cooldown_s=0.5, max_attempts=3)

    def state() -> str:
        return f"{relay.tail()}\noutbox: {outbox_count(conn)}, dead: {dead_letters(conn)}"

    # the breaker opens, the region is marked down, its jobs go to the fallback region
    wait_for(lambda: queues.total() == 20, 30, "the jobs rerouted to us-east-1", on_timeout=state)
    wait_for(
        lambda: not region_row(conn, "eu-west-1")["healthy"],
        10,
        "eu-west-1 unhealthy",
        on_timeout=state,
    )
    found = {p.job["job_id"]: p for p in queues.all()}
    assert set(found) == set(rerouted)
    assert all(p.job["delivered_to"] == "us-east-1" for p in found.values())
    # pinned jobs wait, without burning their attempts; nothing is dead-lettered
    rows = conn.execute("SELECT job_id::text, attempts FROM pgpulse.outbox").fetchall()
    assert {r["job_id"] for r in rows} == set(pinned)
    assert all(r["attempts"] == 0 for r in rows), rows
    assert dead_letters(conn) == 0

    upstash.clear_faults()  # the quota is raised
    wait_for(lambda: outbox_count(conn) == 0, 30, "the pinned jobs", on_timeout=state)
    found = assert_exactly_once(queues, set(rerouted) | set(pinned))
    assert all(p.db == eu.db for p in found if p.job["job_id"] in set(pinned))
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0


# ---------------------------------------------------------------- 4. no endless batch, no crash


@pytest.mark.timeout(120)
def test_whole_request_4xx_reaches_the_dead_letters_instead_of_looping(
    conn, regions, relays, queues, upstash
):
    ap = BY_CODE["ap-south-1"]
    upstash.set_faults({"error_rate": 1.0, "error_statuses": [400]}, tokens=[ap.token])
    stuck = insert_jobs(conn, 12, "ap-south-1", allow_fallback=False, tag="proxy400")
    fine = insert_jobs(conn, 12, "us-east-1", tag="fine")
    relay = relays.start(max_attempts=3, breaker_failures=1000)
    wait_for(
        lambda: dead_letters(conn) == 12,
        45,
        "the refused jobs in the dead letters",
        on_timeout=relay.tail,
    )
    assert outbox_count(conn) == 0
    assert {
        r["job_id"] for r in conn.execute("SELECT job_id::text, attempts FROM pgpulse.dead_letters")
    } == set(stuck)
    assert_exactly_once(queues, set(fine))
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("malformed", ["short", "bad_items"])
def test_a_malformed_reply_fails_that_batch_only(conn, regions, relays, queues, upstash, malformed):
    eu = BY_CODE["eu-west-1"]
    upstash.set_faults({"malformed_rate": 1.0, "malformed": malformed}, tokens=[eu.token])
    mangled = insert_jobs(conn, 15, "eu-west-1", allow_fallback=False, tag="mangled")
    fine = insert_jobs(conn, 15, "ap-south-1", tag="fine")
    relay = relays.start(max_attempts=50, breaker_failures=1000)
    wait_for(
        lambda: (
            conn.execute("SELECT count(*) AS n FROM pgpulse.outbox WHERE attempts >= 2").fetchone()[
                "n"
            ]
            == 15
        ),
        30,
        "the mangled batch to be tried again with its attempts counted",
        on_timeout=relay.tail,
    )
    assert relay.running(), relay.tail()
    assert "Traceback" not in relay.stderr()
    wait_for(
        lambda: outbox_ids(conn) == set(mangled),
        10,
        "the other region's jobs",
        on_timeout=relay.tail,
    )
    # the commands did run: once the replies are whole again, each job is in eu once
    upstash.clear_faults()
    wait_for(lambda: outbox_count(conn) == 0, 30, "the mangled jobs", on_timeout=relay.tail)
    found = assert_exactly_once(queues, set(mangled) | set(fine))
    assert all(p.db == eu.db for p in found if p.job["job_id"] in set(mangled))
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0


# ---------------------------------------------------------------- 5. a frozen relay


@pytest.mark.timeout(120)
def test_a_frozen_relay_does_not_strand_its_claim(conn, regions, relays, queues, upstash):
    eu = BY_CODE["eu-west-1"]
    # relay A talks to eu-west-1 with its own token, whose requests hang: A is mid-publish
    # when it is frozen (SIGSTOP), holding its claim
    upstash.set_faults({"hang_rate": 1.0}, tokens=[eu.alt_token])
    ids = insert_jobs(conn, 10, "eu-west-1", expires_in_s=60, allow_fallback=False, tag="frozen")
    frozen = relays.start(
        env=relays.env(
            tokens={"eu-west-1": eu.alt_token},
            claim_lease_s=3,
            publish_timeout_s=1.5,
            retry_window_s=1,
        )
    )
    wait_for(
        lambda: claimed_by_others(conn, "eu-west-1") == 10,
        30,
        "relay A to claim",
        on_timeout=frozen.tail,
    )
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        other = relays.start(claim_lease_s=3)
        wait_for(
            lambda: outbox_count(conn) == 0 and queues.total() == 10,
            30,
            "relay B to deliver what the frozen relay claimed",
            on_timeout=other.tail,
        )
        assert time.monotonic() - stopped_at < 20  # well inside the jobs' 60 s
    finally:
        upstash.clear_faults()
        frozen.signal(signal.SIGCONT)
    # the frozen relay wakes: its claim is gone, its late push is a duplicate at most
    wait_for(
        lambda: frozen.has_event("database_error") or frozen.has_event("publish_failed"),
        30,
        "relay A to notice",
        on_timeout=frozen.tail,
    )
    for process in (frozen, other):
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.tail()
    assert_exactly_once(queues, set(ids))


# ---------------------------------------------------------------- 6. no poll storm


def database_transactions(conn) -> int:
    return conn.execute("""
        SELECT xact_commit + xact_rollback AS n FROM pg_stat_database
         WHERE datname = current_database()""").fetchone()["n"]


@pytest.mark.timeout(120)
def test_idle_workers_do_not_storm_while_a_sibling_holds_the_due_rows(
    conn, regions, relays, upstash
):
    us = BY_CODE["us-east-1"]
    relay = relays.start(
        concurrency=4,
        publish_timeout_s=40,
        retry_window_s=0,
        claim_lease_s=90,
        depth_interval_s=60,
        poll_interval_s=30,
    )
    wait_for(
        lambda: relay.has_event("relay_started"), 30, "the relay to start", on_timeout=relay.tail
    )
    upstash.set_faults({"hang_rate": 1.0}, tokens=[us.token])  # its publishes hang from now
    insert_jobs(conn, 50, "us-east-1", tag="held", notify=True)
    wait_for(
        lambda: claimed_by_others(conn, "us-east-1") == 50,
        60,
        "a worker to hold the batch",
        on_timeout=relay.tail,
    )
    time.sleep(1.5)  # let the other workers reach their steady state, not a wait for a condition
    conn.execute("SELECT pg_stat_force_next_flush()")
    before, started = database_transactions(conn), time.monotonic()
    time.sleep(5)  # the measuring window
    conn.execute("SELECT pg_stat_force_next_flush()")
    rate = (database_transactions(conn) - before) / (time.monotonic() - started)
    assert claimed_by_others(conn, "us-east-1") == 50, "the batch was not held for the window"
    assert rate < 40, f"{rate:.0f} transactions/s while another worker holds the due rows"
    relay.kill()  # its publish hangs for 40 s: SIGTERM would wait for it


# ---------------------------------------------------------------- 11. relay --once says when it could not


def test_relay_once_exits_non_zero_when_due_jobs_remain(
    conn, regions, relays, queues, upstash, eu_down
):
    waiting = insert_jobs(conn, 7, "eu-west-1", allow_fallback=False, tag="pinned")
    fine = insert_jobs(conn, 5, "ap-south-1", tag="fine")
    relay = relays.start("--once", "--json", breaker_failures=2, retry_window_s=0.5)
    assert relay.wait(60) == 1, relay.tail()
    last = relay.stderr().strip().splitlines()[-1]
    assert last.startswith("pgpulse relay: error: 7 due job(s) not delivered: region eu-west-1"), (
        last
    )
    assert "HTTP 503" in last
    assert json.loads(relay.stdout())["published"] == 5
    assert outbox_ids(conn) == set(waiting)
    for secret in (r.token for r in REGIONS):
        assert secret not in relay.stderr()
    # nothing left behind: success
    upstash.clear_faults()
    assert relays.run_once()["published"] == 7
    assert_exactly_once(queues, set(waiting) | set(fine))


# ---------------------------------------------------------------- 8. routing follows the regions


@pytest.mark.timeout(120)
def test_a_recovered_region_gets_its_monitors_jobs_back_within_seconds(
    conn, regions, relays, queues
):
    # eu-west-1 was down when the tick planned the next minute: it routed around it
    conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
    # due in 15 s: the relay starts and brings them home in about 3 s (5x that)
    insert_monitors(conn, 30, region="eu-west-1", due_ago_s=-15)
    conn.execute("CALL pgpulse.tick(NULL, 'test', '45 seconds', '60 seconds', 5000)")
    planned = {r["job_id"] for r in conn.execute("SELECT job_id::text FROM pgpulse.outbox")}
    assert len(planned) == 30
    assert {r["region"] for r in conn.execute("SELECT region FROM pgpulse.outbox")} == {"us-east-1"}
    # a relay reaches eu-west-1: the region is back, and so are its monitors' jobs
    relay = relays.start()
    wait_for(
        lambda: region_row(conn, "eu-west-1")["healthy"],
        15,
        "eu-west-1 healthy again",
        on_timeout=relay.tail,
    )
    wait_for(
        lambda: (
            {r["region"] for r in conn.execute("SELECT region FROM pgpulse.outbox")}
            == {"eu-west-1"}
        ),
        10,
        "the planned jobs to come home",
        on_timeout=relay.tail,
    )
    wait_for(
        lambda: queues.total() == 30, 60, "the jobs at their deliver_at", on_timeout=relay.tail
    )
    found = queues.all()
    assert all(
        p.db == BY_CODE["eu-west-1"].db
        and p.job["region"] == "eu-west-1"
        and "delivered_to" not in p.job
        for p in found
    )
    assert len({p.job["job_id"] for p in found}) == 30
    assert relay.has_event("jobs_returned_home", region="eu-west-1", count=30)
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0


# ---------------------------------------------------------------- 9. nothing is orphaned


@pytest.mark.timeout(120)
def test_jobs_of_deleted_renamed_disabled_and_unconfigured_regions(conn, regions, relays, queues):
    conn.execute("""
        INSERT INTO pgpulse.regions (code, fallback_region) VALUES
            ('sa-east-1', 'us-east-1'), ('me-central-1', 'us-east-1');
        INSERT INTO pgpulse.regions (code, weight) VALUES ('af-south-1', 0)""")
    insert_monitors(conn, 10, region="sa-east-1")
    insert_monitors(conn, 10, region="me-central-1")
    insert_monitors(conn, 10, region="eu-west-1")
    insert_monitors(conn, 6, region="eu-west-1", allow_fallback=False)
    assert tick(conn, lookahead_s=0)["jobs_written"] == 36
    pinned = {
        r["job_id"]
        for r in conn.execute("SELECT job_id::text FROM pgpulse.outbox WHERE NOT allow_fallback")
    }
    insert_jobs(conn, 5, "af-south-1", expires_in_s=-1, deliver_in_s=-90, tag="stale")
    nowhere = insert_jobs(conn, 3, "af-south-1", tag="unconfigured")
    conn.execute("""
        DELETE FROM pgpulse.regions WHERE code = 'sa-east-1';
        UPDATE pgpulse.regions SET code = 'me-central-2' WHERE code = 'me-central-1';
        UPDATE pgpulse.regions SET enabled = false WHERE code = 'eu-west-1'""")
    # the backlog views see every row, also those of regions that are gone; a renamed
    # region's waiting jobs were renamed with it
    backlog = {r["region"]: r for r in conn.execute(queries()["backlog"])}
    assert backlog["sa-east-1"]["waiting"] == 10 and backlog["me-central-2"]["waiting"] == 10
    assert "me-central-1" not in backlog
    assert backlog["af-south-1"]["expired"] == 5 and backlog["af-south-1"]["due"] == 3

    env = relays.env()
    env["UPSTASH_REDIS_REST_TOKEN_ME_CENTRAL_2"] = BY_CODE["ap-south-1"].token
    relay = relays.start("--once", "--json", env=env)
    assert relay.wait(60) == 1, relay.tail()
    last = relay.stderr().strip().splitlines()[-1]
    assert "9 due job(s) not delivered" in last and "af-south-1" in last and "eu-west-1" in last
    totals = json.loads(relay.stdout())
    assert totals["expired"] == 5 and totals["published"] == 30, totals
    assert outbox_ids(conn) == pinned | set(nowhere)
    found = queues.all()
    assert len(found) == 30 and len({p.job["job_id"] for p in found}) == 30
    by_origin = collections.Counter(p.job["monitor_id"] for p in found)
    assert set(by_origin.values()) == {1}  # one job per monitor
    regions_now = collections.Counter(p.job["region"] for p in found)
    # renamed: its new name; disabled (allowing fallback): the fallback; deleted: the wheel
    assert regions_now["me-central-2"] >= 10 and regions_now["eu-west-1"] == 0
    assert regions_now["us-east-1"] >= 10 and "sa-east-1" not in regions_now
    for p in found:
        assert p.key == f"pgpulse:jobs:{p.job['region']}:{p.job['criticality']}"

    # nothing waits forever: when they expire, the left-overs are dropped and counted
    conn.execute("UPDATE pgpulse.outbox SET expires_at = now() - interval '1 second'")
    totals = relays.run_once(env=env)
    assert totals["expired"] == 9 and outbox_count(conn) == 0, totals


# ---------------------------------------------------------------- 10. dead letters come back as they left


def test_dlq_retry_keeps_allow_fallback_and_keeps_what_it_cannot_move(
    db_url, conn, regions, relays, queues, upstash, redis_server
):
    pinned = insert_jobs(
        conn, 4, "eu-west-1", allow_fallback=False, criticality="low", tag="pinned-dead"
    )
    eu = redis.Redis.from_url(redis_server.url, db=BY_CODE["eu-west-1"].db)
    eu.set("pgpulse:jobs:eu-west-1:low", "not a list")  # each push of theirs fails
    relay = relays.start("--once", "--json", max_attempts=1, batch_size=2)
    assert relay.wait(60) == 1, relay.tail()  # dead-lettered jobs: --once says so
    eu.delete("pgpulse:jobs:eu-west-1:low")
    eu.close()
    assert "4 job(s) failed their last attempt and were dead-lettered" in relay.stderr()
    rows = conn.execute("SELECT job_id::text, allow_fallback FROM pgpulse.dead_letters").fetchall()
    assert {r["job_id"] for r in rows} == set(pinned)
    assert not any(r["allow_fallback"] for r in rows)
    # one slot is back in the outbox already (e.g. scheduled again by hand)
    conn.execute(
        """
        INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                    deliver_at, expires_at, allow_fallback, payload)
        SELECT job_id, monitor_id, region, criticality, scheduled_for, now() + interval '1 hour',
               expires_at + interval '1 hour', false, payload
          FROM pgpulse.dead_letters WHERE job_id = %s""",
        (pinned[0],),
    )

    done = pgpulse("dlq", "retry", "--json", database_url=db_url, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"retried": 3, "kept": 1}
    text = pgpulse("dlq", "retry", database_url=db_url, timeout=60).stdout
    assert "kept 1 dead letter(s) whose slot is in the outbox already" in text
    assert [r["job_id"] for r in conn.execute("SELECT job_id::text FROM pgpulse.dead_letters")] == [
        pinned[0]
    ]
    rows = conn.execute(
        """
        SELECT job_id::text, allow_fallback, attempts,
               extract(epoch FROM expires_at - now()) AS ttl FROM pgpulse.outbox
         WHERE job_id <> %s""",
        (pinned[0],),
    ).fetchall()
    assert {r["job_id"] for r in rows} == set(pinned[1:])
    assert all(
        not r["allow_fallback"] and r["attempts"] == 0 and 250 < r["ttl"] <= 300 for r in rows
    ), rows

    # eu-west-1 down: the retried pinned jobs wait for it, they do not leave their region
    take_down(upstash, BY_CODE["eu-west-1"].token)
    relay = relays.start("--once", breaker_failures=2, retry_window_s=0.3)
    assert relay.wait(60) == 1, relay.tail()
    assert queues.total() == 0 and len(outbox_ids(conn)) == 4


# ---------------------------------------------------------------- 7. region health is agreed


@pytest.mark.timeout(120)
def test_two_relays_that_see_a_region_differently_agree_on_its_health(
    conn, regions, relays, upstash
):
    eu = BY_CODE["eu-west-1"]
    conn.execute("""
        CREATE TABLE public.test_flips (healthy boolean NOT NULL);
        CREATE FUNCTION public.test_flip() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.test_flips VALUES (NEW.healthy);
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_flip AFTER UPDATE OF healthy ON pgpulse.regions FOR EACH ROW
            WHEN (NEW.code = 'eu-west-1' AND OLD.healthy IS DISTINCT FROM NEW.healthy)
            EXECUTE FUNCTION public.test_flip();""")
    # relay A reaches eu-west-1 with a token whose requests all fail; relay B's work
    take_down(upstash, eu.alt_token)
    settings = {
        "breaker_failures": 2,
        "breaker_cooldown_s": 0.3,
        "retry_window_s": 0.2,
        "depth_interval_s": 0.3,
        # a view counts 5 s, renewed every 1 s (5x): B's lasts through the window below and
        # is gone 5 s after B
        "poll_interval_s": 1,
        "health_ttl_s": 5,
    }
    b = relays.start(**settings)
    wait_for(lambda: b.has_event("relay_started"), 30, "relay B to start", on_timeout=b.tail)
    a = relays.start(env=relays.env(tokens={"eu-west-1": eu.alt_token}, **settings))
    wait_for(
        lambda: (
            sum(
                1
                for e in a.events()
                if e["event"] == "breaker_changed"
                and e["region"] == "eu-west-1"
                and e["new"] == "open"
            )
            >= 3
        ),
        30,
        "relay A to see eu-west-1 down again and again",
        on_timeout=a.tail,
    )
    conn.execute("DELETE FROM public.test_flips")
    time.sleep(6)  # a window of disagreement to count flips in, not a wait for a condition
    flips = [r["healthy"] for r in conn.execute("SELECT healthy FROM public.test_flips")]
    assert len(flips) <= 1, f"eu-west-1 flipped {len(flips)} times: {flips}"
    assert region_row(conn, "eu-west-1")["healthy"]  # one of two sees it down: not most
    # B gone, its view ages out: A alone sees the region, and it is down
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0
    wait_for(
        lambda: not region_row(conn, "eu-west-1")["healthy"],
        20,
        "eu-west-1 unhealthy once only relay A sees it",
        on_timeout=a.tail,
    )
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0


# ---------------------------------------------------------------- 12. no cross-region duplicates


@pytest.mark.timeout(300)
def test_kill_9_with_the_breaker_on_and_a_region_failing_lands_every_job_once(
    conn, regions, relays, queues, upstash
):
    for region in REGIONS:
        insert_jobs(conn, 1000, region.code, expires_in_s=900, tag=f"kb-{region.code}")
    expected = outbox_ids(conn)
    # every region slow, with a few answers lost after the push ran; eu-west-1 loses most
    # of its answers, so its breaker opens and its jobs reroute meanwhile
    upstash.set_faults(
        {
            "latency_ms": 30,
            "jitter_ms": 60,
            "error_rate": 0.1,
            "error_statuses": [503],
            "phase": "after",
        }
    )
    upstash.set_faults(
        {
            "latency_ms": 30,
            "jitter_ms": 60,
            "error_rate": 0.7,
            "error_statuses": [503],
            "phase": "after",
        },
        tokens=[BY_CODE["eu-west-1"].token],
    )
    rng = random.Random()
    for _ in range(10):
        relay = relays.start(
            batch_size=25,
            concurrency=2,
            breaker_failures=3,
            breaker_cooldown_s=0.5,
            retry_window_s=0.5,
        )
        wait_for(
            lambda: relay.has_event("relay_started"),
            30,
            "the relay to start",
            on_timeout=relay.tail,
        )
        time.sleep(rng.uniform(0.3, 1.5))  # a random moment to kill at, not a wait
        relay.kill()
        wait_for(lambda: open_claims(conn) == 0, 10, "the killed relay's claims to roll back")
    rerouted = sum(1 for p in queues.all() if "delivered_to" in p.job)
    assert rerouted > 0, "no job was rerouted: the breaker never opened"
    upstash.clear_faults()
    relays.run_once()
    assert outbox_count(conn) == 0
    assert_exactly_once(queues, expected)  # no job in two regions' queues
