"""Region routing in the tick: preferred region, its fallback, the default region,
allow_fallback, round-robin (balance, weight, degraded regions) and no region at all."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.seeding import add_monitors, add_region, add_regions, schedule_of, tick

# a 5-minute interval: one slot each within the tick's lookahead
ONE_SLOT = {"check_interval_minutes": 5}


def routed(conn, monitors: list[dict] | None = None) -> Counter:
    """Jobs per region (of the given monitors, or all)."""
    ids = None if monitors is None else {m["id"] for m in monitors}
    rows = conn.execute("SELECT monitor_id, region FROM pgpulse.outbox").fetchall()
    return Counter(r["region"] for r in rows if ids is None or r["monitor_id"] in ids)


@pytest.fixture
def three_regions(conn) -> None:
    """us-east-1 (default), eu-west-1 falling back to ap-south-1, ap-south-1."""
    add_regions(conn, "us-east-1", {"ap-south-1": None, "eu-west-1": "ap-south-1"})


# ------------------------------------------------------------------ preferred region


def test_preferred_region_enabled_and_healthy_is_used(conn, three_regions):
    ids = add_monitors(conn, 20, **ONE_SLOT, preferred_region="eu-west-1")
    tick(conn)
    assert routed(conn, ids) == {"eu-west-1": 20}


@pytest.mark.parametrize("down", ["healthy = false", "enabled = false"])
def test_preferred_region_down_goes_to_its_fallback(conn, three_regions, down):
    ids = add_monitors(conn, 20, **ONE_SLOT, preferred_region="eu-west-1")
    conn.execute(f"UPDATE pgpulse.regions SET {down} WHERE code = 'eu-west-1'")
    tick(conn)
    assert routed(conn, ids) == {"ap-south-1": 20}


@pytest.mark.parametrize("fallback_down", ["healthy = false", "enabled = false"])
def test_preferred_and_fallback_down_go_to_the_default_region(conn, three_regions, fallback_down):
    ids = add_monitors(conn, 20, **ONE_SLOT, preferred_region="eu-west-1")
    conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
    conn.execute(f"UPDATE pgpulse.regions SET {fallback_down} WHERE code = 'ap-south-1'")
    tick(conn)
    assert routed(conn, ids) == {"us-east-1": 20}


def test_preferred_down_without_a_fallback_goes_to_the_default_region(conn, three_regions):
    ids = add_monitors(conn, 20, **ONE_SLOT, preferred_region="ap-south-1")
    conn.execute("UPDATE pgpulse.regions SET enabled = false WHERE code = 'ap-south-1'")
    tick(conn)
    assert routed(conn, ids) == {"us-east-1": 20}


def test_default_region_down_sends_its_monitors_to_round_robin(conn, three_regions):
    ids = add_monitors(conn, 30, **ONE_SLOT, preferred_region="us-east-1")
    conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'us-east-1'")
    tick(conn)
    assert routed(conn, ids) == {"ap-south-1": 15, "eu-west-1": 15}


@pytest.mark.parametrize("down", ["healthy = false", "enabled = false"])
def test_no_fallback_allowed_stays_on_the_preferred_region(conn, three_regions, down):
    ids = add_monitors(conn, 20, **ONE_SLOT, preferred_region="eu-west-1", allow_fallback=False)
    conn.execute(f"UPDATE pgpulse.regions SET {down} WHERE code = 'eu-west-1'")
    run = tick(conn)
    assert routed(conn, ids) == {"eu-west-1": 20}
    assert run["jobs_written"] == 20
    flags = conn.execute("SELECT DISTINCT allow_fallback FROM pgpulse.outbox").fetchall()
    assert flags == [{"allow_fallback": False}]


# ------------------------------------------------------------------ round-robin


def test_round_robin_over_enabled_healthy_regions_is_balanced_across_chunks(conn, three_regions):
    add_region(conn, "sa-east-1", enabled=False)
    add_region(conn, "af-south-1", healthy=False)
    ids = add_monitors(conn, 1000, **ONE_SLOT)
    run = tick(conn, chunk=7)
    assert run["chunks"] == 143
    counts = routed(conn, ids)
    assert set(counts) == {"us-east-1", "eu-west-1", "ap-south-1"}
    assert sum(counts.values()) == 1000
    assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_round_robin_respects_weight(conn):
    add_region(conn, "us-east-1", is_default=True, weight=3)
    add_region(conn, "eu-west-1", weight=1)
    add_region(conn, "ap-south-1", weight=0)  # never picked by round-robin
    ids = add_monitors(conn, 1001, **ONE_SLOT)
    tick(conn, chunk=50)
    counts = routed(conn, ids)
    assert set(counts) == {"us-east-1", "eu-west-1"}
    assert abs(counts["us-east-1"] - 1001 * 3 / 4) <= 1, counts
    assert abs(counts["eu-west-1"] - 1001 / 4) <= 1, counts


def test_round_robin_avoids_degraded_regions_while_another_is_fine(conn, three_regions):
    conn.execute("UPDATE pgpulse.regions SET degraded = true WHERE code <> 'eu-west-1'")
    ids = add_monitors(conn, 40, **ONE_SLOT)
    tick(conn, chunk=9)
    assert routed(conn, ids) == {"eu-west-1": 40}

    # all degraded: round-robin over all of them again
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute("UPDATE pgpulse.regions SET degraded = true")
    # time passes: the monitors are due again (pgpulse's clock of them moved back)
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '10 seconds'")
    tick(conn, chunk=9)
    counts = routed(conn, ids)
    assert sorted(counts.values()) == [13, 13, 14], counts


def test_all_regions_unhealthy_jobs_wait_on_enabled_regions(conn, three_regions):
    """No healthy region anywhere: jobs are still scheduled, on the preferred region or
    spread over the enabled ones, and wait there for a region to recover."""
    conn.execute("UPDATE pgpulse.regions SET healthy = false")
    add_region(conn, "sa-east-1", enabled=False, healthy=False)
    rr = add_monitors(conn, 30, **ONE_SLOT)
    pinned = add_monitors(conn, 10, **ONE_SLOT, preferred_region="eu-west-1")
    run = tick(conn)
    assert run["unrouted"] == 0
    assert routed(conn, pinned) == {"eu-west-1": 10}
    assert routed(conn, rr) == {"us-east-1": 10, "eu-west-1": 10, "ap-south-1": 10}


def test_region_changes_between_ticks_are_followed(conn, three_regions):
    ids = add_monitors(conn, 10, **ONE_SLOT, preferred_region="eu-west-1")
    tick(conn)
    conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    tick(conn)
    assert routed(conn, ids) == {"eu-west-1": 10, "ap-south-1": 10}


# ------------------------------------------------------------------ no region


def test_no_enabled_region_emits_nothing_counts_unrouted_and_leaves_monitors_due(conn):
    add_region(conn, "us-east-1", is_default=True, enabled=False)
    add_region(conn, "eu-west-1", enabled=False)
    add_monitors(conn, 25, **ONE_SLOT)
    add_monitors(conn, 5, **ONE_SLOT, preferred_region="eu-west-1")
    before = schedule_of(conn)

    run = tick(conn, chunk=10)

    assert (run["jobs_written"], run["unrouted"]) == (0, 30)
    assert run["finished_at"] is not None and not run["cut_short"]
    assert routed(conn) == {}
    assert schedule_of(conn) == before

    # a region comes back: the next tick schedules them all
    conn.execute("UPDATE pgpulse.regions SET enabled = true WHERE code = 'us-east-1'")
    run = tick(conn, chunk=10)
    assert (run["jobs_written"], run["unrouted"]) == (30, 0)
    assert routed(conn) == {"us-east-1": 30}


def test_no_regions_at_all_counts_every_due_monitor_unrouted(conn):
    add_monitors(conn, 12, **ONE_SLOT)
    run = tick(conn, chunk=5)
    assert (run["monitors_claimed"], run["jobs_written"], run["unrouted"]) == (0, 0, 12)
    assert routed(conn) == {}


def test_unroutable_monitors_do_not_starve_routable_ones(conn):
    """With no round-robin region, monitors without a preference cannot be routed; they
    stay due (counted once per tick), and every monitor that can be routed still is,
    however many unroutable ones come first in due order."""
    add_region(conn, "us-east-1", weight=0)  # enabled and healthy, but not in round-robin
    stuck = add_monitors(conn, 50, **ONE_SLOT)
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 minute'")
    ok = add_monitors(conn, 30, **ONE_SLOT, preferred_region="us-east-1")

    run = tick(conn, chunk=10)

    assert routed(conn, ok) == {"us-east-1": 30}
    assert routed(conn, stuck) == {}
    assert (run["jobs_written"], run["unrouted"]) == (30, 50)
    assert run["monitors_claimed"] == 30
    due = conn.execute(
        "SELECT count(*) AS n FROM pgpulse.schedule WHERE next_check_at <= now()"
    ).fetchone()["n"]
    assert due == 50


def test_without_fallback_a_deleted_preferred_region_gets_no_job_and_is_counted(
    conn, three_regions
):
    """A monitor that must run in its own region never moves to another one because that
    region was deleted: it gets no job (the tick counts it unrouted) until its region is
    back; monitors that allow fallback go round-robin."""
    strict = add_monitors(conn, 4, **ONE_SLOT, preferred_region="eu-west-1", allow_fallback=False)
    loose = add_monitors(conn, 6, **ONE_SLOT, preferred_region="eu-west-1")
    conn.execute("DELETE FROM pgpulse.regions WHERE code = 'eu-west-1'")

    run = tick(conn)

    assert routed(conn, strict) == {}
    assert run["unrouted"] == 4
    assert sum(routed(conn, loose).values()) == 6 and "eu-west-1" not in routed(conn)
    # the region comes back: they are checked there
    add_region(conn, "eu-west-1", fallback_region="ap-south-1")
    run = tick(conn)
    assert routed(conn, strict) == {"eu-west-1": 4}
    assert run["unrouted"] == 0


def test_a_renamed_region_keeps_its_monitors_and_their_waiting_jobs(conn, three_regions):
    """Renaming a region in pgpulse.regions moves its monitors' routing and the jobs
    waiting for it to the new code; the product's own column is not rewritten."""
    strict = add_monitors(conn, 3, **ONE_SLOT, preferred_region="eu-west-1", allow_fallback=False)
    tick(conn)
    assert routed(conn, strict) == {"eu-west-1": 3}

    conn.execute("UPDATE pgpulse.regions SET code = 'eu-west-9' WHERE code = 'eu-west-1'")

    assert routed(conn, strict) == {"eu-west-9": 3}  # the waiting jobs
    conn.execute("DELETE FROM pgpulse.outbox")
    # time passes: the next slots go to the renamed region, none is left unrouted
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    run = tick(conn)
    assert routed(conn, strict) == {"eu-west-9": 3}
    assert run["unrouted"] == 0
    # pgpulse never writes the product's table
    assert {
        r["preferred_region"]
        for r in conn.execute("SELECT preferred_region FROM public.monitors").fetchall()
    } == {"eu-west-1"}


def test_monitors_the_wheel_takes_are_never_counted_unrouted(conn, three_regions):
    """Due monitors without a region, or with an unknown one that may fall back, go
    round-robin: the count of monitors no region can take left them out of the tick's own
    rule and counted every one due after the tick's claims (262 of 850 in a soak), so
    monitors_unrouted fired under a steady load."""
    add_monitors(conn, 20, **ONE_SLOT)  # no preferred region
    add_monitors(conn, 5, **ONE_SLOT, preferred_region="gone-1")  # unknown, may fall back
    stuck = add_monitors(conn, 3, **ONE_SLOT, preferred_region="gone-1", allow_fallback=False)
    counted = conn.execute(
        "SELECT pgpulse._unrouted(now() + interval '1 minute', r.route, r.wheel, 1000) AS n"
        "  FROM pgpulse._routing() r"
    ).fetchone()["n"]
    assert counted == len(stuck)
