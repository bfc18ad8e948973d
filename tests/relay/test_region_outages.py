"""Region-level failures with real processes: a region whose endpoint refuses connections,
and Upstash's quota errors on batches of one and two jobs. Either way the region's breaker
opens, no job is dead-lettered or pinned to the failing region by a push that never ran, and
the jobs that may fall back are delivered exactly once to the fallback region."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.queues import assert_exactly_once
from tests.support.regions import BY_CODE
from tests.support.seeding import insert_jobs, outbox_ids
from tests.support.waiting import wait_for

# what Upstash's free tier answers once its daily quota is used up (its troubleshooting page)
DAILY_LIMIT = (
    "ERR max daily request limit exceeded. Limit: 10000, Usage: 10000. "
    "See https://upstash.com/docs/redis/troubleshooting/max_daily_request_limit for details"
)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound by nobody else but listened on by nobody: connects are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def intents(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM pgpulse.push_intents").fetchone()["n"]


def dead_letters(conn) -> list[dict]:
    return conn.execute("SELECT job_id::text, attempts FROM pgpulse.dead_letters").fetchall()


def attempts(conn) -> set[int]:
    return {r["attempts"] for r in conn.execute("SELECT attempts FROM pgpulse.outbox")}


@pytest.mark.timeout(120)
def test_a_region_refusing_connections_pins_nothing_and_its_jobs_fall_back(
    conn, regions, relays, queues, upstash, closed_port
):
    rerouted = insert_jobs(conn, 60, "eu-west-1", tag="refused-fallback")
    waiting = insert_jobs(conn, 5, "eu-west-1", allow_fallback=False, tag="refused-home")
    env = relays.env(breaker_failures=8, breaker_cooldown_s=2, retry_window_s=0.2, batch_size=20)
    # the breaker opens only after the drainers' own batches were refused
    env["UPSTASH_REDIS_REST_URL_EU_WEST_1"] = f"http://127.0.0.1:{closed_port}"
    relay = relays.start(env=env)

    def state() -> str:
        return (
            f"{relay.tail()}\noutbox: {len(outbox_ids(conn))}, intents: {intents(conn)}, "
            f"queued: {queues.total()}"
        )

    wait_for(
        lambda: queues.total() == len(rerouted) and outbox_ids(conn) == set(waiting),
        30,
        "every job that may fall back in the fallback region",
        on_timeout=state,
    )
    # half-open probes keep trying eu-west-1 with the waiting jobs: between two of them no
    # push intent is left (the refused pushes never ran)
    wait_for(lambda: intents(conn) == 0, 10, "no push intent left", on_timeout=state)
    assert relay.has_event("breaker_changed", region="eu-west-1", new="open")
    found = assert_exactly_once(queues, set(rerouted))
    assert {p.db for p in found} == {BY_CODE["us-east-1"].db}
    assert all(p.job["delivered_to"] == "us-east-1" for p in found)
    assert attempts(conn) == {0}  # never sent: not an attempt of theirs
    assert dead_letters(conn) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_quota_error_on_a_small_batch_opens_the_breaker_and_dead_letters_nothing(
    conn, regions, relays, queues, upstash, jobs
):
    upstash.set_faults(
        {"inline_error_rate": 1.0, "inline_error": DAILY_LIMIT},
        tokens=[BY_CODE["eu-west-1"].token],
    )
    rerouted = insert_jobs(conn, jobs, "eu-west-1", tag=f"quota-{jobs}")
    relay = relays.start(breaker_failures=3, breaker_cooldown_s=60, max_attempts=2, concurrency=1)

    def state() -> str:
        return f"{relay.tail()}\ndead letters: {dead_letters(conn)}, queued: {queues.total()}"

    wait_for(
        lambda: queues.total() == jobs or dead_letters(conn),
        30,
        "the jobs rerouted (or dead-lettered)",
        on_timeout=state,
    )
    assert dead_letters(conn) == [], state()
    assert relay.has_event("breaker_changed", region="eu-west-1", new="open"), state()
    found = assert_exactly_once(queues, set(rerouted))
    assert all(p.db == BY_CODE["us-east-1"].db for p in found)
    assert upstash.stats()["faults"]["inline_error"] >= 3  # each refusal reached the region
