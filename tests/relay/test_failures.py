"""The relay under failure, with real processes: kill -9 mid-publish, a flaky and a dead
region on the dev server, PostgreSQL restarted under it, SIGTERM while busy, a refused
token. Exactly once is checked across every queue of every region's database."""

from __future__ import annotations

import random
import signal
import time

import pytest
import redis

from tests.support.activity import listening, open_claims
from tests.support.queues import assert_exactly_once
from tests.support.regions import ADMIN_TOKEN, BY_CODE, REGIONS
from tests.support.seeding import (
    connect,
    emitted_ids,
    follow_logged,
    insert_jobs,
    insert_monitors,
    outbox_count,
    outbox_ids,
    record_emitted,
    region_row,
    tick,
)
from tests.support.waiting import wait_for


@pytest.mark.timeout(240)
def test_kill_9_mid_publish_then_restart_delivers_every_slot_once(
    conn, regions, relays, queues, upstash, redis_server
):
    insert_monitors(conn, 9000)
    # no 1-minute jobs: on a busy machine the kills below can outlast their lifetime
    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 5 WHERE check_interval_minutes = 1"
    )
    follow_logged(conn)  # a bulk UPDATE is followed a moment later: now, before the tick
    # an interval change re-phases the monitor (often past now): make every one due again
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    assert tick(conn, lookahead_s=0)["jobs_written"] == 9000
    expected = outbox_ids(conn)
    stats = redis.Redis.from_url(redis_server.url)
    stats.config_resetstat()
    # slow publishes, so kills land mid-batch; a fifth of the answers lost after the push
    # ran ("after"), so jobs are pushed, then rolled back, then pushed again
    upstash.set_faults(
        {
            "latency_ms": 80,
            "jitter_ms": 160,
            "error_rate": 0.2,
            "error_statuses": [503],
            "phase": "after",
        }
    )
    rng = random.Random()
    kills = mid_batch = 0
    while kills < 22:
        # the breaker stays closed here: dedup keys live in each region's database, so a job
        # pushed to its region by a killed relay and then rerouted by the next one (breaker
        # open) would sit in two regions' queues. This test is about kills, not rerouting.
        relay = relays.start(batch_size=20, concurrency=2, breaker_failures=1000)
        wait_for(
            lambda: relay.has_event("relay_started"),
            30,
            "the relay to start",
            on_timeout=relay.tail,
        )
        # a random moment after the first claim to kill at (start-up on a busy machine
        # can take longer than any fixed delay)
        wait_for(
            lambda: open_claims(conn) > 0,
            30,
            "the relay's first claim",
            interval=0.01,
            on_timeout=relay.tail,
        )
        time.sleep(rng.uniform(0.0, 0.5))
        mid_batch += open_claims(conn) > 0
        relay.kill()
        kills += 1
        # a killed relay's transactions roll back: nothing it claimed stays claimed
        wait_for(lambda: open_claims(conn) == 0, 10, "the killed relay's claims to roll back")
    assert mid_batch >= kills // 2, f"only {mid_batch} of {kills} kills landed mid-batch"
    left = outbox_count(conn)
    assert 0 < left < 9000, f"{left} jobs left: the kills did not interrupt a busy relay"

    upstash.clear_faults()
    totals = relays.run_once()
    assert totals["published"] + totals["duplicates"] >= left
    assert outbox_count(conn) == 0
    assert_exactly_once(queues, expected)
    calls = {k: v["calls"] for k, v in stats.info("commandstats").items()}
    # the queues hold each job once (above), although some were sent more than once: each
    # send of a job sets its dedup key (SET NX) before any push
    assert calls["cmdstat_set"] > 9000
    stats.close()


@pytest.mark.timeout(120)
def test_flaky_region_503s_and_latency_still_deliver_everything_once(
    conn, regions, relays, queues, upstash
):
    insert_monitors(conn, 3000)
    assert tick(conn, lookahead_s=0)["jobs_written"] == 3000
    expected = outbox_ids(conn)
    # 30% answered 503 after a random delay, and a few requests that never get an answer.
    # The run starts with more hangs until two have happened: at 3% alone, a run of ~120
    # requests had none about once in forty.
    flaky = {
        "error_rate": 0.3,
        "error_statuses": [503],
        "hang_rate": 0.03,
        "latency_ms": 2,
        "jitter_ms": 40,
    }
    upstash.set_faults({**flaky, "hang_rate": 0.25})
    # breaker closed: an open breaker refuses the retry of the failure that opened it
    relay = relays.start(batch_size=40, concurrency=3, publish_timeout_s=1, breaker_failures=1000)
    wait_for(
        lambda: upstash.stats()["faults"]["hang"] >= 2,
        30,
        "two hung requests",
        interval=0.05,
        on_timeout=relay.tail,
    )
    upstash.set_faults(flaky)
    wait_for(
        lambda: outbox_count(conn) == 0 and queues.total() >= 3000,
        60,
        "delivery through a flaky dev server",
        interval=0.1,
        on_timeout=relay.tail,
    )
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    assert_exactly_once(queues, expected)
    served = upstash.stats()
    assert served["faults"]["error"] > 10 and served["responses"].get("503", 0) > 10
    assert served["faults"]["hang"] >= 2
    stopped = [e for e in relay.events() if e["event"] == "relay_stopped"]
    assert stopped and stopped[-1]["retries"] >= served["faults"]["error"] * 0.9, stopped
    retried = [e for e in relay.events() if e["event"] == "publish_retry"]
    assert any("HTTP 503" in e["error"] for e in retried)
    assert any("Timeout" in e["error"] for e in retried)


@pytest.mark.timeout(120)
def test_region_down_reroutes_or_waits_then_recovers(
    conn, regions, relays, queues, upstash, eu_down
):
    rerouted = insert_jobs(conn, 60, "eu-west-1", tag="fallback-ok")
    waiting = insert_jobs(
        conn, 25, "eu-west-1", allow_fallback=False, tag="stay-home", criticality="critical"
    )
    others = insert_jobs(conn, 30, "us-east-1", tag="us") + insert_jobs(
        conn, 30, "ap-south-1", tag="ap"
    )
    relay = relays.start(
        breaker_failures=3, breaker_cooldown_s=0.5, retry_window_s=1, batch_size=50
    )

    def state() -> str:
        return f"{relay.tail()}\noutbox: {outbox_count(conn)}, queued: {queues.total()}"

    wait_for(
        lambda: not region_row(conn, "eu-west-1")["healthy"],
        30,
        "eu-west-1 to be marked unhealthy",
        on_timeout=state,
    )
    wait_for(lambda: queues.total() == 120, 30, "the rerouted and the other jobs", on_timeout=state)
    # the dead region keeps being probed (half-open) and fails again; its
    # allow_fallback=false jobs wait in the outbox meanwhile
    wait_for(
        lambda: (
            sum(
                1
                for e in relay.events()
                if e["event"] == "breaker_changed"
                and e["region"] == "eu-west-1"
                and e["new"] == "half_open"
            )
            >= 2
        ),
        30,
        "two failed half-open probes",
        on_timeout=state,
    )
    wait_for(
        lambda: outbox_ids(conn) == set(waiting),
        10,
        "only the waiting jobs in the outbox",
        on_timeout=state,
    )
    assert not region_row(conn, "eu-west-1")["healthy"]
    assert region_row(conn, "us-east-1")["healthy"] and region_row(conn, "ap-south-1")["healthy"]
    found = {p.job["job_id"]: p for p in queues.all()}
    for job_id in rerouted:
        p = found[job_id]
        assert p.db == BY_CODE["us-east-1"].db
        assert p.job["region"] == "eu-west-1" and p.job["delivered_to"] == "us-east-1"
        assert p.key == "pgpulse:jobs:us-east-1:normal"
    assert queues.clients[eu_down.db].dbsize() == 0

    upstash.clear_faults()  # the region is back
    wait_for(
        lambda: region_row(conn, "eu-west-1")["healthy"],
        30,
        "eu-west-1 to be healthy again",
        on_timeout=state,
    )
    wait_for(lambda: outbox_count(conn) == 0, 30, "the waiting jobs", on_timeout=state)
    assert relay.has_event("breaker_changed", region="eu-west-1", new="closed")
    late = insert_jobs(conn, 10, "eu-west-1", tag="after-recovery", notify=True)
    wait_for(lambda: queues.total() == 155, 30, "jobs after the recovery", on_timeout=state)
    found = assert_exactly_once(queues, set(rerouted) | set(waiting) | set(others) | set(late))
    for p in found:
        if p.job["job_id"] in set(waiting) | set(late):
            assert p.db == eu_down.db and "delivered_to" not in p.job
            assert p.key == f"pgpulse:jobs:eu-west-1:{p.job['criticality']}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_run_relay_reconnects_and_finishes(
    pg_server, db_url, conn, regions, relays, queues, upstash, mode
):
    record_emitted(conn)
    for region in REGIONS:
        insert_jobs(conn, 5000, region.code, tag=f"restart-{region.code}")
    expected = set(emitted_ids(conn))
    upstash.set_faults({"latency_ms": 60})
    relay = relays.start(batch_size=100, concurrency=1, poll_interval_s=30)
    wait_for(
        lambda: queues.total() > 1500,
        60,
        "the relay to be well into the outbox",
        on_timeout=relay.tail,
    )
    conn.close()
    pg_server.restart(mode)
    with connect(db_url) as again:
        assert outbox_count(again) > 0, "the relay finished before the restart"
        wait_for(
            lambda: outbox_count(again) == 0,
            120,
            "the relay to finish after the restart",
            interval=0.2,
            on_timeout=relay.tail,
        )
        assert relay.running()
        assert relay.has_event("listen_lost")
        # the LISTEN connection is back: a NOTIFY wakes the relay long before the 30 s poll
        upstash.clear_faults()
        wait_for(lambda: listening(again), 30, "the relay to listen again", on_timeout=relay.tail)
        before = queues.total()
        started = time.monotonic()
        late = insert_jobs(again, 3, "eu-west-1", tag="after-restart", notify=True)
        wait_for(
            lambda: queues.total() == before + 3,
            25,
            "the notified jobs",
            interval=0.02,
            on_timeout=relay.tail,
        )
        assert time.monotonic() - started < 15
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    assert_exactly_once(queues, expected | set(late))


@pytest.mark.timeout(120)
def test_sigterm_while_busy_exits_0_and_loses_nothing(conn, regions, relays, queues, upstash):
    for region in REGIONS:
        insert_jobs(conn, 1500, region.code, tag=f"term-{region.code}")
    expected = outbox_ids(conn)
    upstash.set_faults({"latency_ms": 100, "jitter_ms": 100})
    relay = relays.start(batch_size=25, concurrency=2)
    wait_for(
        lambda: queues.total() > 200 and open_claims(conn) > 0,
        30,
        "the relay to be busy publishing",
        interval=0.01,
        on_timeout=relay.tail,
    )
    relay.signal(signal.SIGTERM)
    started = time.monotonic()
    assert relay.wait(15) == 0, relay.tail()
    assert time.monotonic() - started < 10
    assert relay.has_event("relay_stopped")
    assert open_claims(conn) == 0
    # nothing lost or doubled: every job is either published or still in the outbox
    published = queues.counts_by_job()
    assert all(n == 1 for n in published.values())
    left = outbox_ids(conn)
    assert not left & published.keys()
    assert left | published.keys() == expected
    assert left, "the relay finished everything before SIGTERM"

    upstash.clear_faults()
    totals = relays.run_once()
    assert totals["published"] == len(left) and totals["duplicates"] == 0, totals
    assert outbox_count(conn) == 0
    assert_exactly_once(queues, expected)


def test_refused_token_is_one_clear_line_loses_nothing_and_leaks_no_token(
    conn, regions, relays, queues, upstash
):
    wrong = "tok-wrong-us-east-1-e4d3c2b1a0"
    stuck = insert_jobs(conn, 30, "us-east-1", tag="refused")
    delivered = insert_jobs(conn, 30, "eu-west-1", tag="accepted")
    # each relay's view of a region's health counts 5 s (renewed every 1 s), not 30: the
    # fixed relay below waits for the views of the ones before it to age out
    ages_fast = {"poll_interval_s": 1, "health_ttl_s": 5}
    env = relays.env(tokens={"us-east-1": wrong}, **ages_fast)
    relay = relays.start("--once", env=env)
    code = relay.wait(60)
    out, err = relay.stdout(), relay.stderr()
    assert code == 1, relay.tail()
    assert outbox_ids(conn) == set(stuck)  # the refused region's jobs wait in the outbox
    assert_exactly_once(queues, set(delivered))
    refused = [line for line in err.splitlines() if "token refused" in line]
    assert refused, err
    assert all("us-east-1" in line for line in refused)
    assert "UPSTASH_REDIS_REST_TOKEN_US_EAST_1" in refused[-1]
    last = err.strip().splitlines()[-1]
    assert last.startswith("pgpulse relay: error: region us-east-1: token refused"), last
    for secret in [wrong, ADMIN_TOKEN, *(r.token for r in REGIONS)]:
        assert secret not in out and secret not in err

    # a long-running relay: the region is marked unhealthy, nothing is lost either
    conn.execute("UPDATE pgpulse.regions SET healthy = true")
    relay = relays.start(env=env)
    wait_for(
        lambda: relay.has_event("token_refused", region="us-east-1"),
        30,
        "the relay to report the refused token",
        on_timeout=relay.tail,
    )
    wait_for(
        lambda: not region_row(conn, "us-east-1")["healthy"],
        30,
        "us-east-1 to be marked unhealthy",
        on_timeout=relay.tail,
    )
    assert outbox_ids(conn) == set(stuck)
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    for secret in [wrong, ADMIN_TOKEN, *(r.token for r in REGIONS)]:
        assert secret not in relay.stdout() and secret not in relay.stderr()

    # the token fixed: the waiting jobs go out, and the relay, having reached the region,
    # corrects the healthy = false an earlier relay left behind
    relay = relays.start(**ages_fast)
    wait_for(lambda: outbox_count(conn) == 0, 30, "the waiting jobs", on_timeout=relay.tail)
    wait_for(
        lambda: region_row(conn, "us-east-1")["healthy"],
        30,
        "us-east-1 to be healthy again",
        on_timeout=relay.tail,
    )
    assert_exactly_once(queues, set(stuck) | set(delivered))


@pytest.mark.timeout(120)
def test_lost_http_connections_and_flushed_scripts_are_recovered(
    conn, regions, relays, queues, upstash, redis_server
):
    for region in REGIONS:
        insert_jobs(conn, 1000, region.code, tag=f"http-{region.code}")
    expected = outbox_ids(conn)
    upstash.set_faults({"latency_ms": 50})
    relay = relays.start(batch_size=20, concurrency=1)
    wait_for(lambda: queues.total() > 500, 30, "the relay to be publishing", on_timeout=relay.tail)
    upstash.stop()  # every keep-alive connection of the relay is cut
    upstash.start()  # same port; no faults any more
    wait_for(
        lambda: outbox_count(conn) == 0,
        60,
        "the relay to finish over new connections",
        on_timeout=relay.tail,
    )
    # Redis forgets the push script (a restart, a failover): NOSCRIPT, load it, push again
    redis.Redis.from_url(redis_server.url).script_flush()
    late = insert_jobs(conn, 30, "ap-south-1", tag="after-flush", notify=True)
    wait_for(
        lambda: outbox_count(conn) == 0 and queues.total() == 3030,
        30,
        "the jobs after the script flush",
        on_timeout=relay.tail,
    )
    assert relay.has_event("script_reloaded", region="ap-south-1")
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    assert_exactly_once(queues, expected | set(late))
    lost = [e for e in relay.events() if e["event"] in ("publish_retry", "publish_failed")]
    assert lost, "the dev server restart did not break any request"


@pytest.mark.timeout(120)
def test_a_probe_that_only_drops_expired_jobs_does_not_wedge_the_breaker(
    conn, regions, relays, queues, upstash, eu_down
):
    relay = relays.start(breaker_failures=2, breaker_cooldown_s=0.5, retry_window_s=0.5)
    rerouted = insert_jobs(conn, 5, "eu-west-1", tag="trigger", notify=True)
    wait_for(
        lambda: not region_row(conn, "eu-west-1")["healthy"] and queues.total() == 5,
        30,
        "eu-west-1 down and its jobs rerouted",
        on_timeout=relay.tail,
    )
    # the next half-open probe claims only these: dropped, nothing sent to the region
    insert_jobs(
        conn,
        10,
        "eu-west-1",
        deliver_in_s=-120,
        expires_in_s=-1,
        allow_fallback=False,
        tag="stale",
        notify=True,
    )
    wait_for(
        lambda: relay.has_event("jobs_expired", region="eu-west-1", count=10),
        30,
        "the expired jobs to be dropped",
        on_timeout=relay.tail,
    )
    upstash.clear_faults()
    wait_for(
        lambda: region_row(conn, "eu-west-1")["healthy"],
        30,
        "the breaker to close after a real probe",
        on_timeout=relay.tail,
    )
    home = insert_jobs(conn, 5, "eu-west-1", allow_fallback=False, tag="home", notify=True)
    wait_for(
        lambda: queues.clients[eu_down.db].llen("pgpulse:jobs:eu-west-1:normal") == 5,
        30,
        "jobs delivered to the recovered region",
        on_timeout=relay.tail,
    )
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    assert_exactly_once(queues, set(rerouted) | set(home))
