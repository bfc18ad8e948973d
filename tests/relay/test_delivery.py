"""The relay delivers real outbox rows to the dev server's regional queues: many relay
processes at once, deliver_at timing, the NOTIFY wake-up, inline errors, expiry, backlog."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis

from tests.support.activity import listening
from tests.support.queues import assert_exactly_once, parse_ts
from tests.support.regions import BY_CODE
from tests.support.seeding import (
    emitted_ids,
    insert_jobs,
    insert_monitors,
    outbox_count,
    record_emitted,
    region_row,
    tick,
)
from tests.support.waiting import wait_for


@pytest.mark.timeout(180)
def test_four_relays_deliver_20000_jobs_exactly_once(
    conn, regions, relays, queues, schema_validator
):
    procs = [relays.start(batch_size=250, concurrency=2) for _ in range(4)]
    for p in procs:
        wait_for(lambda: p.has_event("relay_started"), 30, f"{p.name} to start", on_timeout=p.tail)
    record_emitted(conn)
    insert_monitors(conn, 20_000)
    run = tick(conn, lookahead_s=0)  # each chunk's NOTIFY wakes the relays while the tick goes on
    assert run["jobs_written"] == 20_000
    emitted = emitted_ids(conn)
    expected = set(emitted)
    assert len(emitted) == len(expected) == 20_000

    wait_for(
        lambda: outbox_count(conn) == 0 and queues.total() >= 20_000,
        120,
        "the outbox to drain into the queues",
        interval=0.2,
        on_timeout=relays.tails,
    )
    for p in procs:
        p.signal(15)
    for p in procs:
        assert p.wait(30) == 0, p.tail()

    found = assert_exactly_once(queues, expected)
    monitors = {str(m["id"]): m for m in conn.execute("SELECT * FROM public.monitors")}
    for p in found:
        job = p.job
        schema_validator.validate(job)
        m = monitors[job["monitor_id"]]
        assert job["url"] == m["url"]
        assert job["method"] == m["method"]
        assert job["timeout_ms"] == m["timeout_ms"]
        assert job["expected_status"] == m["expected_status"]
        assert job["retry"] == {
            "max_attempts": m["check_retries"] + 1,
            "delay_ms": m["check_retry_delay_ms"],
        }
        assert job["criticality"] == m["criticality"]
        assert job["attempt"] == 1 and "delivered_to" not in job
        interval = timedelta(minutes=m["check_interval_minutes"])
        assert parse_ts(job["expires_at"]) - parse_ts(job["scheduled_for"]) == interval
        if m["preferred_region"]:
            assert job["region"] == m["preferred_region"]
    # every region got work, and the relays split it without double counting
    assert {p.job["region"] for p in found} == set(BY_CODE)
    published = [
        sum(e["jobs"] for e in p.events() if e["event"] == "batch_published") for p in procs
    ]
    assert sum(published) == 20_000, published
    assert sum(1 for n in published if n) >= 2, f"one relay did all the work: {published}"


def test_jobs_are_not_published_before_deliver_at(conn, regions, relays, queues):
    relay = relays.start(poll_interval_s=30)
    wait_for(lambda: listening(conn), 30, "the relay to listen", on_timeout=relay.tail)
    offsets = {"us-east-1": 1.0, "eu-west-1": 1.6, "ap-south-1": 2.2}
    due = {}
    for code, offset in offsets.items():
        for job_id in insert_jobs(conn, 3, code, deliver_in_s=offset, tag=f"later-{code}"):
            due[job_id] = conn.execute(
                "SELECT extract(epoch FROM deliver_at)::float8 AS t FROM pgpulse.outbox "
                "WHERE job_id = %s",
                (job_id,),
            ).fetchone()["t"]
    conn.execute("NOTIFY pgpulse_outbox")  # a wake-up must not publish early either

    seen: dict[str, float] = {}

    def all_seen() -> bool:
        now = time.time()
        for p in queues.all():
            seen.setdefault(p.job["job_id"], now)
        return len(seen) == len(due)

    wait_for(all_seen, 30, "the delayed jobs", interval=0.01, on_timeout=relay.tail)
    for job_id, deliver_at in due.items():
        assert seen[job_id] >= deliver_at, f"{job_id} seen {deliver_at - seen[job_id]:.3f} s early"
        # the timer on the next deliver_at woke the relay, not the 30 s poll
        assert seen[job_id] - deliver_at < 10, (
            f"{job_id} published {seen[job_id] - deliver_at:.2f} s late"
        )


def test_notify_wakes_an_idle_relay_long_before_the_poll_interval(conn, regions, relays, queues):
    relay = relays.start(poll_interval_s=30)
    wait_for(
        lambda: listening(conn) and relay.has_event("relay_started"),
        30,
        "the relay to listen",
        on_timeout=relay.tail,
    )
    for round_ in range(3):
        started = time.monotonic()
        insert_jobs(conn, 5, "eu-west-1", tag=f"wake-{round_}", notify=True)
        wait_for(
            lambda: queues.total() == 5 * (round_ + 1),
            25,
            "the notified jobs",
            interval=0.01,
            on_timeout=relay.tail,
        )
        assert time.monotonic() - started < 10, "NOTIFY did not wake the relay"
    # the push comes first, the claim's commit right after it
    wait_for(lambda: outbox_count(conn) == 0, 10, "the claims to commit")


def test_inline_errors_requeue_with_attempts_and_backoff(
    conn, regions, relays, queues, upstash, redis_server
):
    # a minority of a batch failing on its own: those jobs only, with an attempt more (a
    # queue key of the wrong type: a real error inside the push call, for those jobs only)
    us = redis.Redis.from_url(redis_server.url, db=BY_CODE["us-east-1"].db)
    us.set("pgpulse:jobs:us-east-1:low", "not a list")
    ids = insert_jobs(conn, 40, "us-east-1", criticality="low", tag="inline")
    good = insert_jobs(conn, 60, "us-east-1", tag="fine")
    before = {
        r["job_id"]: r["deliver_at"]
        for r in conn.execute("SELECT job_id::text, deliver_at FROM pgpulse.outbox")
    }
    relay = relays.start("--once", "--json")
    assert relay.wait(60) == 1, relay.tail()  # jobs left for a later attempt: not a success
    assert "40 job(s) failed and wait for a later attempt" in relay.stderr().splitlines()[-1]
    totals = json.loads(relay.stdout())
    assert totals["failed"] == 40 and totals["published"] == 60 and totals["held"] == 0, totals
    rows = conn.execute(
        "SELECT job_id::text, attempts, deliver_at, last_error FROM pgpulse.outbox"
    ).fetchall()
    assert {r["job_id"] for r in rows} == set(ids)
    for r in rows:
        assert r["attempts"] == 1
        # a backoff (1 s +-20% after the first attempt), from the moment of the failure
        assert (r["deliver_at"] - before[r["job_id"]]).total_seconds() >= 0.8
        assert "WRONGTYPE" in r["last_error"]
    us.delete("pgpulse:jobs:us-east-1:low")
    us.close()
    assert_exactly_once(queues, set(good))

    # a share of the push calls failing as a whole at random: those batches are held (a
    # whole call failing is the region's trouble) and every job still arrives exactly once
    conn.execute("UPDATE pgpulse.outbox SET deliver_at = now()")
    more = insert_jobs(conn, 160, "ap-south-1", tag="inline-share")
    upstash.set_faults({"inline_error_rate": 0.2})
    relay = relays.start(max_attempts=10, batch_size=5)
    wait_for(
        lambda: upstash.stats()["faults"].get("inline_error", 0) > 0 and queues.total() > 60,
        30,
        "some calls to fail",
        on_timeout=relay.tail,
    )
    upstash.clear_faults()
    wait_for(lambda: outbox_count(conn) == 0, 60, "the held jobs", on_timeout=relay.tail)
    found = assert_exactly_once(queues, set(ids) | set(more) | set(good))
    retried = [p.job for p in found if p.job["attempt"] > 1]
    assert retried, "no job was delivered on a later attempt"


def test_jobs_dead_letter_after_the_attempt_limit(
    conn, regions, relays, queues, upstash, redis_server
):
    eu = redis.Redis.from_url(redis_server.url, db=BY_CODE["eu-west-1"].db)
    eu.set("pgpulse:jobs:eu-west-1:low", "not a list")  # those jobs always fail on their own
    ids = insert_jobs(conn, 25, "eu-west-1", criticality="low", tag="dead")
    good = insert_jobs(conn, 50, "eu-west-1", tag="alive")
    # batches of two: a poisoned job is never most of its batch (which would count
    # against the region instead, see test_losses)
    relay = relays.start(max_attempts=2, batch_size=2)
    wait_for(
        lambda: (
            conn.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"] == 25
        ),
        30,
        "the dead letters",
        on_timeout=relay.tail,
    )
    assert outbox_count(conn) == 0
    rows = conn.execute(
        "SELECT job_id::text, attempts, last_error, payload FROM pgpulse.dead_letters"
    ).fetchall()
    assert {r["job_id"] for r in rows} == set(ids)
    for r in rows:
        assert r["attempts"] == 2
        assert "WRONGTYPE" in r["last_error"]
        assert r["payload"]["url"].startswith("https://dead-")
    eu.delete("pgpulse:jobs:eu-west-1:low")
    eu.close()
    assert_exactly_once(queues, set(good))
    wait_for(lambda: relay.has_event("job_dead_lettered"), 10, "a dead-letter log line")


def test_expired_jobs_are_dropped_and_counted(conn, regions, relays, queues):
    stale = insert_jobs(conn, 30, "us-east-1", deliver_in_s=-600, expires_in_s=-1, tag="stale")
    stale += insert_jobs(conn, 12, "ap-south-1", deliver_in_s=-90, expires_in_s=-30, tag="stale2")
    live = insert_jobs(conn, 20, "us-east-1", deliver_in_s=-600, expires_in_s=60, tag="live")
    totals = relays.run_once()
    assert totals["expired"] == 42 and totals["published"] == 20, totals
    assert_exactly_once(queues, set(live))
    assert outbox_count(conn) == 0
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"] == 0


def test_a_long_queue_marks_its_region_degraded(conn, regions, relays, queues):
    relay = relays.start(backlog_degraded=50, depth_interval_s=0.2)
    insert_jobs(conn, 80, "ap-south-1", tag="deep", notify=True)
    insert_jobs(conn, 10, "eu-west-1", tag="shallow", notify=True)
    wait_for(
        lambda: region_row(conn, "ap-south-1")["degraded"],
        20,
        "ap-south-1 to count as degraded",
        on_timeout=relay.tail,
    )
    assert not region_row(conn, "eu-west-1")["degraded"]
    assert not region_row(conn, "us-east-1")["degraded"]
    # workers pop the queue: the region is no longer degraded
    for key in queues.clients[BY_CODE["ap-south-1"].db].scan_iter(match="pgpulse:jobs:*"):
        queues.clients[BY_CODE["ap-south-1"].db].delete(key)
    wait_for(
        lambda: not region_row(conn, "ap-south-1")["degraded"],
        20,
        "ap-south-1 to recover from degraded",
        on_timeout=relay.tail,
    )


def test_a_region_added_while_running_gets_its_own_workers(conn, regions, relays, queues):
    env = relays.env()
    # sa-east-1 shares ap-south-1's database on the dev server; its queue keys differ
    env["UPSTASH_REDIS_REST_TOKEN_SA_EAST_1"] = BY_CODE["ap-south-1"].token
    relay = relays.start(env=env)
    wait_for(
        lambda: relay.has_event("relay_started"), 30, "the relay to start", on_timeout=relay.tail
    )
    conn.execute(
        "INSERT INTO pgpulse.regions (code, fallback_region) VALUES "
        "('sa-east-1', 'us-east-1'), ('me-south-1', 'us-east-1')"
    )
    wait_for(
        lambda: relay.has_event("region_added", region="sa-east-1"),
        30,
        "the relay to pick up sa-east-1",
        on_timeout=relay.tail,
    )
    ids = insert_jobs(conn, 20, "sa-east-1", tag="new-region", notify=True)
    ap = queues.clients[BY_CODE["ap-south-1"].db]
    wait_for(
        lambda: ap.llen("pgpulse:jobs:sa-east-1:normal") == 20,
        30,
        "the new region's jobs",
        on_timeout=relay.tail,
    )
    wait_for(lambda: outbox_count(conn) == 0, 10, "the claims to commit")
    pushed = {p.job["job_id"] for p in queues.all() if p.key == "pgpulse:jobs:sa-east-1:normal"}
    assert pushed == set(ids)
    # a region without an endpoint is reported once, not at every reload
    wait_for(
        lambda: relay.has_event("region_not_configured", region="me-south-1"),
        30,
        "the unconfigured region to be reported",
        on_timeout=relay.tail,
    )
    conn.execute("INSERT INTO pgpulse.regions (code) VALUES ('af-south-1')")
    wait_for(
        lambda: relay.has_event("region_not_configured", region="af-south-1"),
        30,
        "a later reload",
        on_timeout=relay.tail,
    )
    relay.signal(15)
    assert relay.wait(30) == 0
    assert (
        sum(
            1
            for e in relay.events()
            if e["event"] == "region_not_configured" and e["region"] == "me-south-1"
        )
        == 1
    )


def test_the_job_json_is_one_object_whatever_the_payload_holds(
    conn, regions, relays, queues, schema_validator
):
    # the claim splices the job's fields into the payload's text: quotes, backslashes,
    # non-ASCII and line separators in it stay JSON, and an odd payload (a hand-written row)
    # still gives one object with the job's fields
    [normal] = insert_jobs(conn, 1, "us-east-1", tag="odd-normal")
    [odd_text] = insert_jobs(conn, 1, "us-east-1", tag="odd-text")
    conn.execute(
        """UPDATE pgpulse.outbox SET payload = payload || jsonb_build_object(
                        'url', 'https://x.test/"q"\\é' || chr(8232), 'note', '{"}')
                     WHERE job_id = %s""",
        (odd_text,),
    )
    odd = {}
    for name, payload in (("empty", "{}"), ("scalar", '"x"'), ("array", "[1, 2]")):
        [odd[name]] = insert_jobs(conn, 1, "us-east-1", tag=f"odd-{name}")
        conn.execute(
            "UPDATE pgpulse.outbox SET payload = %s::jsonb WHERE job_id = %s", (payload, odd[name])
        )
    totals = relays.run_once()
    assert totals["published"] == 5, totals
    jobs = {p.job["job_id"]: p.job for p in queues.all()}
    for job_id in (normal, odd_text, *odd.values()):
        assert isinstance(jobs[job_id], dict) and jobs[job_id]["job_id"] == job_id
        assert jobs[job_id]["region"] == "us-east-1" and jobs[job_id]["attempt"] == 1
    assert (
        jobs[odd_text]["url"] == 'https://x.test/"q"\\é\u2028' and jobs[odd_text]["note"] == '{"}'
    )
    schema_validator.validate(jobs[normal])
    schema_validator.validate(jobs[odd_text])


def test_a_failed_job_goes_back_and_to_the_dead_letters_with_its_payload(
    conn, regions, relays, redis_server
):
    # the claim leaves out a payload that its job JSON holds; a job put back (and later a
    # dead letter) gets it back exactly, whatever it held, also the job's own field names
    us = redis.Redis.from_url(redis_server.url, db=BY_CODE["us-east-1"].db)
    us.set("pgpulse:jobs:us-east-1:normal", "not a list")  # every push fails: WRONGTYPE
    payloads = {
        "normal": None,
        "quoted": r'{"url": "https://x.test/\"q\"\\é", "note": "{\"}"}',
        "job_keys": '{"url": "https://x.test/", "region": "mine", "attempt": 7, "v": 2}',
        "empty": "{}",
        "scalar": '"x"',
        "array": '[1, {"a": 2}]',
    }
    ids = {}
    for name, payload in payloads.items():
        [ids[name]] = insert_jobs(conn, 1, "us-east-1", tag=f"payload-{name}")
        if payload is not None:
            conn.execute(
                "UPDATE pgpulse.outbox SET payload = %s::jsonb WHERE job_id = %s",
                (payload, ids[name]),
            )
    before = {
        r["job_id"]: r["payload"]
        for r in conn.execute("SELECT job_id::text, payload FROM pgpulse.outbox").fetchall()
    }
    assert len(before) == len(payloads)
    # most of each request goes through: the failures are the jobs' own, not the region's
    insert_jobs(conn, 30, "us-east-1", criticality="high", tag="payload-fine")

    def run_once(**settings) -> dict:  # jobs failed: --once exits 1
        relay = relays.start("--once", "--json", **settings)
        assert relay.wait(60) == 1, relay.tail()
        return json.loads(relay.stdout())

    totals = run_once()  # every job failed: back for a later attempt
    assert totals["failed"] == len(payloads), totals
    after = {
        r["job_id"]: r
        for r in conn.execute(
            "SELECT job_id::text, payload, attempts FROM pgpulse.outbox"
        ).fetchall()
    }
    assert {j: r["payload"] for j, r in after.items()} == before
    assert all(r["attempts"] == 1 for r in after.values())

    conn.execute("UPDATE pgpulse.outbox SET deliver_at = now()")
    insert_jobs(conn, 30, "us-east-1", criticality="high", tag="payload-fine-2")
    totals = run_once(max_attempts=2)  # the last attempt fails too
    assert totals["dead_lettered"] == len(payloads), totals
    dead = dict(
        (r["job_id"], r["payload"])
        for r in conn.execute("SELECT job_id::text, payload FROM pgpulse.dead_letters").fetchall()
    )
    assert dead == before
    us.delete("pgpulse:jobs:us-east-1:normal")
    us.close()
