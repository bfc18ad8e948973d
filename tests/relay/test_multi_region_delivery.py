"""Multi-region and sub-minute monitors through the real tick and relay processes: every
(monitor, region, slot) is published exactly once, and a region that is down does not
delay the jobs of the other regions of the same slots."""

from __future__ import annotations

import collections
import time

import pytest

from tests.support.queues import assert_exactly_once, parse_ts
from tests.support.regions import BY_CODE
from tests.support.seeding import add_monitors, emitted_ids, outbox_count, record_emitted, tick
from tests.support.waiting import wait_for

ALL = sorted(BY_CODE)


@pytest.mark.timeout(120)
def test_every_monitor_region_and_slot_is_published_exactly_once(
    conn, regions, relays, queues, schema_validator
):
    relay = relays.start(batch_size=200)
    wait_for(
        lambda: relay.has_event("relay_started"), 30, "the relay to start", on_timeout=relay.tail
    )
    record_emitted(conn)
    add_monitors(conn, 60, check_regions=ALL, check_interval_seconds=300, due="-1 second")
    add_monitors(conn, 20, check_regions=None, check_interval_seconds=10, due="-1 second")
    add_monitors(
        conn,
        10,
        check_regions=["us-east-1", "ap-south-1"],
        check_interval_seconds=10,
        due="-1 second",
    )
    # 12 s ahead: the sub-minute monitors have slots still to come, published on time
    run = tick(conn, lookahead_s=12)
    expected = set(emitted_ids(conn))
    assert len(expected) == run["jobs_written"] >= 60 * 3 + 20 * 2 + 10 * 2 * 2

    wait_for(
        lambda: outbox_count(conn) == 0 and queues.total() >= len(expected),
        60,
        "the outbox to drain",
        interval=0.2,
        on_timeout=relays.tails,
    )
    relay.signal(15)
    assert relay.wait(30) == 0, relay.tail()

    found = assert_exactly_once(queues, expected)
    per_slot: dict[tuple, list] = collections.defaultdict(list)
    for p in found:
        schema_validator.validate(p.job)
        per_slot[(p.job["monitor_id"], p.job["scheduled_for"])].append(p.job)
    for jobs in per_slot.values():
        listed = jobs[0].get("slot_regions")
        if listed is None:  # a single-region monitor: one job per slot
            assert len(jobs) == 1
        else:  # one job per listed region, each told the whole list
            assert sorted(j["region"] for j in jobs) == listed
            assert all(j["slot_regions"] == listed for j in jobs)
    # the ten-second monitors' slots are ten seconds apart, on their grid
    ten = collections.defaultdict(set)
    for p in found:
        if (
            parse_ts(p.job["expires_at"]).timestamp() - parse_ts(p.job["scheduled_for"]).timestamp()
            == 10
        ):
            ten[p.job["monitor_id"]].add(parse_ts(p.job["scheduled_for"]).timestamp())
    assert len(ten) == 30
    for times in ten.values():
        ordered = sorted(times)
        assert len(ordered) >= 2
        assert all(round(b - a, 6) == 10 for a, b in zip(ordered, ordered[1:]))


@pytest.mark.timeout(120)
def test_a_down_region_does_not_delay_the_other_regions_of_a_slot(
    conn, regions, relays, queues, upstash, eu_down
):
    # retries and cooldown long enough that waiting on eu-west-1 would show clearly
    relay = relays.start(breaker_failures=2, breaker_cooldown_s=5, retry_window_s=5)
    wait_for(
        lambda: relay.has_event("relay_started"), 30, "the relay to start", on_timeout=relay.tail
    )
    record_emitted(conn)
    # no fallback: eu-west-1's jobs wait for eu-west-1
    add_monitors(
        conn,
        40,
        check_regions=ALL,
        check_interval_seconds=300,
        allow_fallback=False,
        due="3 seconds",
    )
    tick(conn, lookahead_s=10)
    expected = set(emitted_ids(conn))
    assert len(expected) == 120
    deliver_at = conn.execute("SELECT max(deliver_at) AS t FROM pgpulse.outbox").fetchone()["t"]

    def others_published() -> bool:
        regions_seen = collections.Counter(p.job["region"] for p in queues.all())
        return regions_seen["us-east-1"] == 40 and regions_seen["ap-south-1"] == 40

    wait_for(
        others_published,
        30,
        "us-east-1 and ap-south-1 jobs",
        interval=0.05,
        on_timeout=relays.tails,
    )
    late_s = time.time() - deliver_at.timestamp()
    # on time (the poll itself takes a moment), not after eu-west-1's retries and backoff
    assert late_s < 4.0, late_s
    assert not any(p.job["region"] == "eu-west-1" for p in queues.all())
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM pgpulse.outbox WHERE region = 'eu-west-1'"
        ).fetchone()["n"]
        == 40
    )

    upstash.clear_faults()
    wait_for(
        lambda: outbox_count(conn) == 0 and queues.total() >= 120,
        60,
        "eu-west-1's jobs after it recovers",
        interval=0.2,
        on_timeout=relays.tails,
    )
    found = assert_exactly_once(queues, expected)
    assert collections.Counter(p.job["region"] for p in found) == {r: 40 for r in ALL}
