"""The drainer's decisions, with a fake store and fake region clients: where a batch goes,
when the half-open probe is given back, what is dead-lettered, the NOSCRIPT reload, and
how long an idle drainer sleeps."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from relay.config import RelaySettings
from relay.delivery.breaker import State
from relay.delivery.drainer import Drainer
from relay.delivery.outcomes import FAILED, HELD, PUSHED, WAIT, Outcome, settle
from relay.delivery.publish import Publisher
from relay.errors import MalformedReply, RegionRefused, TokenRefused, TransientError
from tests.support.fakes import (
    Clock,
    FakeStore,
    database_down,
    jobs_in,
    make_job,
    make_region,
    make_registry,
)


def make_drainer(store, registry, region, **settings) -> Drainer:
    s = RelaySettings(**settings)
    registry.settings = s
    return Drainer(
        region,
        registry,
        store,
        s,
        registry.supervisor,
        registry.counts,
        claim_slots=asyncio.Semaphore(1),
    )


def open_breaker(region) -> None:
    for _ in range(region.breaker.threshold):
        region.breaker.record_failure()
    assert region.breaker.state is State.OPEN


def setup(**settings):
    clock, store = Clock(), FakeStore()
    eu = make_region("eu", clock, fallback="us")
    us = make_region("us", clock, is_default=True)
    registry = make_registry(store, eu, us)
    return clock, store, eu, us, registry, make_drainer(store, registry, eu, **settings)


async def test_an_open_breaker_sends_only_fallback_jobs_to_the_fallback_region():
    _, store, eu, us, _, drainer = setup()
    store.due["eu"] = [make_job(1), make_job(2, allow_fallback=False)]
    open_breaker(eu)
    assert await drainer.drain_once() == 1
    assert eu.client.requests == []
    [request] = us.client.requests
    # one push call: EVALSHA sha numkeys dedup queue margin job expires_at
    assert request[0][4] == "pgpulse:jobs:us:normal"
    assert '"delivered_to": "us"' in request[0][6]
    assert drainer.counts.rerouted == 1
    assert [j.job_id for j in store.due["eu"]] == [make_job(2).job_id]  # waits for eu


async def test_a_probe_that_reached_nobody_is_given_back():
    clock, store, eu, _, _, drainer = setup()
    open_breaker(eu)
    clock.now += eu.breaker.cooldown
    store.claim_error = database_down()  # the claim fails before any request
    with pytest.raises(psycopg.Error):
        await drainer.drain_once()
    assert eu.breaker.state is State.HALF_OPEN
    assert eu.breaker.allow() is not None  # the next caller probes


async def test_a_probe_that_reached_the_region_decides_the_breaker():
    clock, store, eu, us, _, drainer = setup()
    open_breaker(eu)
    clock.now += eu.breaker.cooldown
    # no batch: a PING is the probe, and its success closes the breaker
    assert await drainer.drain_once() == 0
    assert eu.client.commands == [("PING",)]
    assert eu.breaker.state is State.CLOSED

    open_breaker(eu)
    clock.now += eu.breaker.cooldown
    eu.script_sha = "sha-1"  # loaded: the batch's one request is the probe
    store.due["eu"] = [make_job(1)]
    eu.client.answer = lambda commands: [{"error": "OOM command not allowed"}] * len(commands)
    with pytest.raises(RegionRefused, match="OOM"):
        await drainer.drain_once()
    assert eu.breaker.state is State.OPEN  # the failed probe reopened it
    assert [r.attempts for r in store.requeued] == [0]  # refused as a region: no attempt
    assert us.client.requests == []


async def test_a_failure_on_the_last_attempt_is_dead_lettered_and_counted_once():
    _, store, eu, _, _, drainer = setup(max_attempts=3)
    store.due["eu"] = [make_job(1, attempts=2), make_job(2, attempts=1), make_job(3), make_job(4)]
    eu.client.answer = lambda commands: [{"result": ["WRONGTYPE", "WRONGTYPE", 1, 0]}]
    assert await drainer.drain_once() == 4
    assert [(r.job.job_id[-1], r.attempts) for r in store.dead] == [("1", 3)]
    assert [(r.job.job_id[-1], r.attempts) for r in store.requeued] == [("2", 2)]
    c = drainer.counts
    assert (c.published, c.duplicates, c.failed, c.dead_lettered) == (2, 1, 2, 1)


def test_settle_keeps_attempts_of_held_and_waiting_jobs():
    jobs = [
        make_job(1, attempts=4),
        make_job(2, attempts=4, pinned_to="us"),
        make_job(3, attempts=4),
        make_job(4, attempts=4),
    ]
    outcomes = [Outcome(HELD, "OOM"), Outcome(WAIT), Outcome(FAILED, "x"), Outcome(PUSHED)]
    settlement = settle(jobs, outcomes, max_attempts=5)
    assert [(r.job.job_id[-1], r.attempts, r.backoff_s) for r in settlement.requeue] == [
        ("1", 4, 0.0),
        ("2", 4, 1.0),
    ]
    assert [(r.job.job_id[-1], r.attempts) for r in settlement.dead] == [("3", 5)]
    assert "waits for region us" in settlement.requeue[1].error


async def test_a_lost_script_is_loaded_again_and_the_push_repeated():
    clock = Clock()
    eu = make_region("eu", clock)
    answers = iter(
        [
            lambda commands: [{"error": "NOSCRIPT No matching script."}] * len(commands),
            lambda commands: [{"result": [1] * jobs_in(c)} for c in commands],
        ]
    )
    eu.client.answer = lambda commands: next(answers)(commands)
    outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(1), make_job(2)], rerouted=False)
    assert outcomes == [Outcome(PUSHED)] * 2
    first, second = eu.client.requests
    assert [c[1] for c in first] == ["sha-1"] and [c[1] for c in second] == ["sha-2"]
    assert eu.script_sha == "sha-2"


async def test_noscript_twice_in_a_row_is_a_failure_not_a_loop():
    eu = make_region("eu", Clock())
    eu.client.answer = lambda commands: [{"error": "NOSCRIPT No matching script."}] * len(commands)
    outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(1)], rerouted=False)
    assert [o.kind for o in outcomes] == [FAILED]
    assert len(eu.client.requests) == 2


async def test_idle_wait_follows_the_next_due_job_and_backs_off_when_rows_are_held():
    _, store, eu, _, _, drainer = setup(poll_interval_s=5.0)
    store.next_due_s = None  # nothing waiting: the poll interval
    assert await drainer.wake_timeout(claimed=0) == 5.0
    store.next_due_s = 1.5
    assert await drainer.wake_timeout(claimed=0) == 1.5
    # due now, yet the claim found nothing: other workers hold the rows; back off
    store.next_due_s = -0.3
    assert [await drainer.wake_timeout(claimed=0) for _ in range(6)] == [
        0.05,
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
    ]
    assert await drainer.wake_timeout(claimed=10) == 0.02  # a short floor gathers a batch
    assert eu.idle_rounds == 0
    store.next_due_s = database_down()
    assert await drainer.wake_timeout(claimed=0) == 0.5


async def test_one_worker_a_region_sleeps_until_the_next_due_job():
    """The region's other workers wait for a wake-up: all of them waking at each due time
    claimed the same few jobs in turn, at several times the cost per job."""
    _, store, eu, _, _, drainer = setup(poll_interval_s=5.0)
    store.next_due_s = 1.5
    release = asyncio.Event()

    async def sleeper() -> float:  # a worker that follows the due time, still asleep
        timeout = await drainer.wake_timeout(claimed=3)
        await release.wait()
        return timeout

    async def another() -> float:
        return await asyncio.create_task(drainer.wake_timeout(claimed=3))

    first = asyncio.create_task(sleeper())
    while eu.due_timer is None:
        await asyncio.sleep(0)
    assert await another() == 5.0
    # a job due sooner than the sleeper wakes (one put back for a retry): followed
    store.next_due_s = 0.5
    assert await another() == 0.5
    release.set()
    assert await first == 1.5

    # jobs falling due all the time: one worker claims them every 20 ms, not all of them
    store.next_due_s, release = -0.01, asyncio.Event()
    first = asyncio.create_task(sleeper())
    while eu.due_timer is not first:
        await asyncio.sleep(0)
    assert await another() == 5.0
    release.set()
    assert await first == 0.02


async def test_a_full_batch_wakes_the_regions_other_workers():
    _, store, eu, _, registry, drainer = setup(batch_size=2, poll_interval_s=5.0)
    store.due["eu"] = [make_job(n) for n in range(3)]
    woken = asyncio.create_task(eu.wake.wait())
    worker = asyncio.create_task(drainer.run())
    await asyncio.wait_for(woken, timeout=5)
    registry.supervisor.stop.set()
    await worker
    assert store.due["eu"] == []


async def test_an_open_breaker_without_fallback_sleeps_until_the_probe():
    clock, store = Clock(), FakeStore()
    eu = make_region("eu", clock, cooldown=10.0)
    drainer = make_drainer(store, make_registry(store, eu), eu, poll_interval_s=30.0)
    open_breaker(eu)
    clock.now += 7.5
    store.next_due_s = 0.0  # not read: no job may go anywhere now
    assert await drainer.wake_timeout(claimed=0) == 2.5


async def test_push_intents_go_with_the_claim_unless_an_answer_was_unreadable():
    _, store, eu, _, _, drainer = setup()
    store.due["eu"] = [make_job(1), make_job(2)]
    assert await drainer.drain_once() == 2
    assert store.intents == {}  # pushed, committed: nothing may be pinned
    store.due["eu"] = [make_job(3)]

    def unreadable(calls):
        raise MalformedReply("region eu: /pipeline answered no list replies to 1 commands")

    eu.client.answer = unreadable
    assert await drainer.drain_once() == 1
    assert store.intents == {make_job(3).job_id: "eu"}  # maybe pushed: pinned to eu


async def test_a_push_that_never_ran_leaves_no_intent_and_its_jobs_fall_back():
    _, store, eu, us, _, drainer = setup()
    store.due["eu"] = [make_job(1), make_job(2)]

    def refused(calls):
        eu.attempted(False)  # as UpstashClient reports each attempt
        raise TransientError("region eu: ConnectError", sent=False)

    eu.client.answer = refused
    for _ in range(eu.breaker.threshold):
        with pytest.raises(TransientError, match="ConnectError"):
            await drainer.drain_once()
        assert store.intents == {}  # nothing was sent: nothing is pinned to eu
        assert [r.attempts for r in store.requeued] == [0, 0]  # back as they were
        store.due["eu"], store.requeued = [r.job for r in store.requeued], []
    assert eu.breaker.state is State.OPEN
    assert await drainer.drain_once() == 2
    assert len(us.client.requests) == 1 and drainer.counts.rerouted == 2


async def test_a_push_that_may_have_run_keeps_its_intent_and_a_refused_token_does_not():
    _, store, eu, _, _, drainer = setup()
    store.due["eu"] = [make_job(1)]

    def lost(calls):
        raise TransientError("region eu: ReadTimeout")

    eu.client.answer = lost
    with pytest.raises(TransientError):
        await drainer.drain_once()  # the claim rolls back; the jobs wait for eu
    assert store.intents == {make_job(1).job_id: "eu"}
    store.intent_rows.clear()
    store.due["eu"] = [make_job(2)]

    def refused(calls):
        raise TokenRefused("eu", 401)

    eu.client.answer = refused
    with pytest.raises(TokenRefused):  # raised for the breaker to open at once
        await drainer.drain_once()
    assert store.intents == {} and [r.attempts for r in store.requeued] == [0]
