"""The relay's publish path in-process against the dev server over real HTTP (its session
fixture, on a real redis-server): a batch pushed through a real UpstashClient, each fault
the dev server can put on the way (an Upstash answer shape) and what becomes of each job;
then `relay --once` in-process, its requests split under the byte bounds. A relay killed,
frozen, stopped or restarted: tests/relay. The decisions alone: tests/unit/test_upstash_replies.py."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from relay.config import Endpoint
from relay.delivery.breaker import CircuitBreaker
from relay.delivery.outbox import Job
from relay.delivery.outcomes import DUPLICATE, EXPIRED, FAILED, HELD, PUSHED, Outcome
from relay.delivery.publish import Publisher
from relay.delivery.regions import Region
from relay.delivery.service import Relay
from relay.delivery.upstash import UpstashClient
from relay.devserver import DevServer
from relay.errors import TokenRefused, TransientError
from tests.support.fakes import make_job
from tests.support.queues import Queues, assert_exactly_once
from tests.support.regions import BY_CODE, REGIONS, make_relay_env
from tests.support.seeding import add_regions, insert_jobs

EU = BY_CODE["eu-west-1"]
# made once: each client's own would load the CA certificates again (a tenth of a second)
TLS_CONTEXT = ssl.create_default_context()
CAPACITY = "ERR DB capacity quota exceeded"
READONLY = "READONLY You can't write against a read only replica."


@pytest.fixture
def upstash(devserver: DevServer, redis_server) -> Iterator[DevServer]:
    """The session's dev server, every region's database empty, no faults."""
    for region in REGIONS:
        with redis.Redis.from_url(redis_server.url, db=region.db) as client:
            client.flushdb()
    devserver.clear_faults()
    yield devserver
    devserver.clear_faults()


@pytest.fixture
def eu_redis(redis_server) -> Iterator[redis.Redis]:
    """eu-west-1's database straight from redis-server (not through the dev server)."""
    client = redis.Redis.from_url(redis_server.url, db=EU.db)
    yield client
    client.close()


@pytest.fixture
async def regions_made() -> AsyncIterator[Callable[..., Region]]:
    """regions_made(url, token): eu-west-1 as a relay holds it: a real client (that tries a
    failed request once more) and a breaker; its client closed after the test."""
    made: list[Region] = []

    def make(url: str, token: str = EU.token) -> Region:
        transport = httpx.AsyncHTTPTransport(verify=TLS_CONTEXT)
        client = UpstashClient(
            Endpoint(EU.code, url, token), timeout=5.0, sleep=no_wait, transport=transport
        )
        region = Region(EU.code, client, CircuitBreaker(3, 60.0))
        client.on_attempt = region.attempted
        client.may_retry = lambda: region.breaker.failures < 2  # one retry, at once
        made.append(region)
        return region

    yield make
    for region in made:
        await region.client.aclose()


@pytest.fixture
async def eu(upstash, regions_made) -> Region:
    region = regions_made(upstash.url)
    await region.ensure_script()  # before any fault: the push itself meets it
    return region


async def no_wait(seconds: float) -> None:
    pass


def job(n: int, *, criticality: str = "normal", expired: bool = False) -> Job:
    """A job for eu-west-1 whose JSON names it (as the tick's do)."""
    made = make_job(n, EU.code)._replace(criticality=criticality)
    if expired:
        made = made._replace(expires_at_s=time.time() - 5)
    return made._replace(
        job_json=json.dumps({"job_id": made.job_id, "region": EU.code, "criticality": criticality})
    )


def queued(eu_redis: redis.Redis) -> list[str]:
    """The job ids in eu-west-1's queues."""
    return sorted(
        json.loads(raw)["job_id"]
        for key in eu_redis.scan_iter(match="pgpulse:jobs:*", _type="list")
        for raw in eu_redis.lrange(key, 0, -1)
    )


async def publish(region: Region, jobs: list[Job], max_request_bytes: int = 1 << 20):
    return await Publisher(max_request_bytes, 60).publish(region, jobs, rerouted=False)


def three_jobs() -> list[Job]:
    """Made when a test runs: a job expires a minute after it is made."""
    return [job(1), job(2), job(3)]


IDS = sorted(j.job_id for j in three_jobs())


# (what, the dev server's fault for eu-west-1's token, each job's outcome or the error the
#  publish raises, the jobs in the queue after, breaker failures counted: one per attempt)
FAULTS: list[tuple[str, dict | None, Any, list[str], int]] = [
    ("delivered", None, [PUSHED] * 3, IDS, 0),
    (
        "the region's writes refused inside a 200: held",
        {"inline_error_rate": 1.0, "inline_error": READONLY},
        [HELD] * 3,
        [],
        1,
    ),
    (
        "the region's quota: held",
        {"inline_error_rate": 1.0, "inline_error": CAPACITY},
        [HELD] * 3,
        [],
        1,
    ),
    (
        "a 503 may have run: raised, never guessed",
        {"error_rate": 1.0, "error_statuses": [503]},
        TransientError,
        [],
        2,
    ),
    ("a 429 too", {"error_rate": 1.0, "error_statuses": [429]}, TransientError, [], 2),
    (
        "a connection closed without an answer too",
        {"drop_rate": 1.0},
        TransientError,
        [],
        2,
    ),
    (
        "a 400 refuses the whole request: an attempt of each job",
        {"error_rate": 1.0, "error_statuses": [400]},
        [FAILED] * 3,
        [],
        1,
    ),
    (
        "replies missing after the commands ran: unclear, each tried again",
        {"malformed_rate": 1.0, "malformed": "short"},
        [FAILED] * 3,
        IDS,
        1,
    ),
    (
        "an answer that is not JSON",
        {"malformed_rate": 1.0, "malformed": "not_json"},
        [FAILED] * 3,
        IDS,
        1,
    ),
    (
        "a request over the region's size limit: split until each part fits",
        {"max_request_bytes": 700},
        [PUSHED] * 3,
        IDS,
        0,
    ),
]


@pytest.mark.parametrize(
    ("fault", "expected", "in_queue", "failures"),
    [case[1:] for case in FAULTS],
    ids=[case[0] for case in FAULTS],
)
async def test_each_answer_of_the_region_and_what_becomes_of_the_jobs(
    upstash, eu, eu_redis, fault, expected, in_queue, failures
):
    if fault:
        upstash.set_faults(fault, tokens=[EU.token])
    if isinstance(expected, type):
        with pytest.raises(expected) as caught:
            await publish(eu, three_jobs())
        assert caught.value.may_have_run
    else:
        outcomes = await publish(eu, three_jobs())
        assert [o.kind for o in outcomes] == expected
        if expected[0] == FAILED and in_queue:
            assert all(o.unclear for o in outcomes)
    assert queued(eu_redis) == in_queue
    assert eu.breaker.failures == failures


async def test_pushed_duplicate_expired_and_a_jobs_own_error_in_one_batch(eu, eu_redis):
    eu_redis.set(f"pgpulse:jobs:{EU.code}:critical", "a string where a list belongs")
    first = await publish(eu, [job(1), job(2)])
    batch = [job(1), job(3, expired=True), job(4, criticality="critical"), job(5)]
    outcomes = await publish(eu, batch)
    assert first == [Outcome(PUSHED)] * 2
    assert [o.kind for o in outcomes] == [DUPLICATE, EXPIRED, FAILED, PUSHED]
    assert outcomes[2].error.startswith("WRONGTYPE")
    assert queued(eu_redis) == sorted([job(1).job_id, job(2).job_id, job(5).job_id])
    assert eu.breaker.failures == 0  # one job's trouble is not the region's


async def test_scripts_flushed_by_a_restart_are_loaded_again(eu, eu_redis):
    eu_redis.script_flush()
    assert [o.kind for o in await publish(eu, three_jobs())] == [PUSHED] * 3
    assert queued(eu_redis) == IDS


async def test_a_refused_token_holds_every_job_and_is_asked_once(upstash, regions_made, eu_redis):
    region = regions_made(upstash.url, token="tok-eu-west-1-WRONG")
    upstash.reset_stats()
    outcomes = await publish(region, three_jobs())
    assert [o.kind for o in outcomes] == [HELD] * 3
    assert isinstance(outcomes[0].cause, TokenRefused)
    assert str(outcomes[0].cause) == "region eu-west-1: token refused (HTTP 401)"
    assert "WRONG" not in str(outcomes[0].cause)
    assert upstash.stats()["responses"] == {"401": 1}  # asked once, not retried
    assert queued(eu_redis) == []


# ------------------------------------------------------------------ the relay in-process


async def test_relay_once_keeps_requests_under_both_bounds(conn, db_url, upstash, redis_server):
    """The relay's own bound keeps requests under the region's limit; a region whose limit is
    smaller than the relay's gets each refused request split, not retried as it was."""
    add_regions(conn, "us-east-1", {"eu-west-1": "us-east-1", "ap-south-1": "us-east-1"})
    us = BY_CODE["us-east-1"]
    tokens = {r.code: r.token for r in REGIONS}
    upstash.set_faults({"max_request_bytes": 40_000}, tokens=[us.token])
    upstash.reset_stats()

    async def run_once(**settings: Any) -> dict:
        env = make_relay_env(db_url, upstash.url, tokens, **settings)
        counts = await Relay(db_url, env=env, once=True, handle_signals=False).run()
        return {"published": counts.published, "failed": counts.failed}

    sizable = insert_jobs(conn, 300, "us-east-1", tag="sizable")  # about 600 bytes a job
    assert await run_once(max_request_bytes=32_768) == {"published": 300, "failed": 0}
    assert upstash.stats()["responses"].get("400", 0) == 0

    split = insert_jobs(conn, 300, "us-east-1", tag="split")
    upstash.reset_stats()
    assert await run_once() == {"published": 300, "failed": 0}  # its bound: 1 MB
    assert upstash.stats()["responses"].get("400", 0) >= 1
    queues = Queues(redis_server.url)
    try:
        assert_exactly_once(queues, set(sizable) | set(split))
    finally:
        queues.close()
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0
