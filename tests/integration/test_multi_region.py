"""Several regions per slot (monitors.check_regions): one job per listed region and slot,
each routed by that region's own fallback rules, each exactly once."""

from __future__ import annotations

import pytest

from tests.support.seeding import (
    add_monitor,
    add_region,
    add_regions,
    outbox_jobs,
    schedule_of,
    tick,
)

ALL = ["ap-south-1", "eu-west-1", "us-east-1"]


# every 5 minutes, due 5 s ago: one slot (per region) within the tick's lookahead
EVERY_5_MIN_DUE = {"check_interval_seconds": 300, "due": "-5 seconds"}


@pytest.fixture
def three_regions(conn) -> None:
    """us-east-1 (default), eu-west-1 falling back to ap-south-1, ap-south-1 to us-east-1."""
    add_regions(conn, "us-east-1", {"ap-south-1": "us-east-1", "eu-west-1": "ap-south-1"})


def test_every_listed_region_gets_one_job_per_slot(conn, three_regions):
    m = add_monitor(
        conn,
        **EVERY_5_MIN_DUE,
        check_regions=["us-east-1", "eu-west-1", "ap-south-1"],
        preferred_region="eu-west-1",
    )
    single = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=None, preferred_region="eu-west-1")

    run = tick(conn)

    assert (run["monitors_claimed"], run["jobs_written"]) == (2, 4)
    multi = outbox_jobs(conn, m["id"])
    assert [j["region"] for j in multi] == ALL
    slot = m["next_check_at"]
    assert {(j["scheduled_for"], j["deliver_at"]) for j in multi} == {(slot, slot)}
    assert len({j["job_id"] for j in multi}) == 3
    # the jobs of one slot carry the same list of regions: workers group them by
    # (monitor_id, scheduled_for) and know how many to expect
    assert all(j["payload"]["slot_regions"] == ALL for j in multi)
    assert all(j["payload"]["url"] == m["url"] for j in multi)
    # a monitor without check_regions is as before: one job, no slot_regions
    [one] = outbox_jobs(conn, single["id"])
    assert one["region"] == "eu-west-1" and "slot_regions" not in one["payload"]
    # bumped once, by one interval; the slot is never emitted again
    row = schedule_of(conn, [m["id"]])[m["id"]]
    assert (row["next_check_at"] - slot).total_seconds() == 300
    assert tick(conn)["jobs_written"] == 0
    assert len(outbox_jobs(conn)) == 4


def test_a_down_region_falls_back_by_its_own_rules_and_merges_with_a_listed_one(
    conn, three_regions
):
    conn.execute("UPDATE pgpulse.regions SET healthy = false WHERE code = 'eu-west-1'")
    # eu-west-1 falls back to ap-south-1, which is listed too: one job there, not two
    both = add_monitor(
        conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "ap-south-1", "us-east-1"]
    )
    # eu-west-1 alone with us-east-1: its job goes to its fallback ap-south-1
    apart = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "us-east-1"])
    # no fallback allowed: the job waits in eu-west-1's outbox, the others go on
    strict = add_monitor(
        conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "us-east-1"], allow_fallback=False
    )

    tick(conn)

    assert [j["region"] for j in outbox_jobs(conn, both["id"])] == ["ap-south-1", "us-east-1"]
    assert outbox_jobs(conn, both["id"])[0]["payload"]["slot_regions"] == [
        "ap-south-1",
        "us-east-1",
    ]
    assert [j["region"] for j in outbox_jobs(conn, apart["id"])] == ["ap-south-1", "us-east-1"]
    strict_jobs = outbox_jobs(conn, strict["id"])
    assert [j["region"] for j in strict_jobs] == ["eu-west-1", "us-east-1"]
    assert not any(j["allow_fallback"] for j in strict_jobs)


def test_a_multi_region_monitor_no_region_can_take_is_left_due_and_counted(conn, three_regions):
    conn.execute("UPDATE pgpulse.regions SET enabled = false")
    m = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "us-east-1"])
    run = tick(conn)
    assert (run["monitors_claimed"], run["jobs_written"], run["unrouted"]) == (0, 0, 1)
    assert schedule_of(conn, [m["id"]])[m["id"]]["next_check_at"] == m["next_check_at"]
    # one region back: the monitor is checked from it alone
    conn.execute("UPDATE pgpulse.regions SET enabled = true WHERE code = 'us-east-1'")
    run = tick(conn)
    assert (run["jobs_written"], run["unrouted"]) == (1, 0)
    [job] = outbox_jobs(conn)
    assert job["region"] == "us-east-1" and job["payload"]["slot_regions"] == ["us-east-1"]


def test_multi_region_monitors_do_not_turn_the_round_robin_wheel(conn, three_regions):
    for _ in range(5):
        add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=ALL)
    rr = [add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=None) for _ in range(30)]
    tick(conn, chunk=7)
    counts = conn.execute(
        "SELECT region, count(*) AS n FROM pgpulse.outbox WHERE monitor_id = ANY(%s) "
        "GROUP BY region ORDER BY region",
        ([m["id"] for m in rr],),
    ).fetchall()
    assert [c["n"] for c in counts] == [10, 10, 10]


@pytest.mark.parametrize("regions", [[], ["us-east-1", None]])
def test_a_bad_check_regions_list_is_parked_with_a_clear_reason(conn, three_regions, regions):
    """The product's write succeeds (pgpulse never fails it): the monitor is parked with the
    reason, gets no job, and is scheduled again once its list is fixed."""
    reason = "check_regions: not 1 to 16 region codes"
    m = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=regions)
    assert m["parked"] == reason
    other = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=None)
    conn.execute(
        "UPDATE public.monitors SET check_regions = %s WHERE id = %s", (regions, other["id"])
    )
    assert schedule_of(conn, [other["id"]])[other["id"]]["parked"] == reason
    assert conn.execute("SELECT count(*) AS n FROM public.monitors").fetchone()["n"] == 2

    run = tick(conn)
    assert (run["monitors_claimed"], run["jobs_written"]) == (0, 0)
    assert outbox_jobs(conn) == []

    conn.execute("UPDATE public.monitors SET check_regions = %s", (["eu-west-1", "us-east-1"],))
    assert {r["parked"] for r in schedule_of(conn).values()} == {None}
    # (scheduled again from its next slot on its grid, up to 5 minutes away: time passes)
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    tick(conn)
    # (its next slot may have been written at once when fixed: one or two slots)
    assert {j["region"] for j in outbox_jobs(conn, m["id"])} == {"eu-west-1", "us-east-1"}


def test_an_unknown_listed_region_is_accepted_and_gets_no_job(conn, three_regions):
    """check_regions naming a region pgpulse does not have (yet) no longer fails the
    product's write: the monitor is not parked (regions come and go after the write), the
    listed regions that exist get their jobs and the unknown one none."""
    m = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=["us-east-1", "mars-1"])
    assert m["parked"] is None
    tick(conn)
    assert [j["region"] for j in outbox_jobs(conn, m["id"])] == ["us-east-1"]


def test_a_renamed_listed_region_keeps_its_jobs_under_the_new_code(conn, three_regions):
    """A region renamed in pgpulse.regions is renamed in the monitors' schedule and in the
    jobs waiting for it: the next slots go to it under its new code (the product's column
    keeps what the product wrote)."""
    m = add_monitor(
        conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "us-east-1"], allow_fallback=False
    )
    tick(conn)
    conn.execute("UPDATE pgpulse.regions SET code = 'eu-west-9' WHERE code = 'eu-west-1'")
    assert [j["region"] for j in outbox_jobs(conn, m["id"])] == ["eu-west-9", "us-east-1"]

    conn.execute("DELETE FROM pgpulse.outbox")
    # time passes: the next slot
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    run = tick(conn)
    jobs = outbox_jobs(conn, m["id"])
    assert [j["region"] for j in jobs] == ["eu-west-9", "us-east-1"]
    assert jobs[0]["payload"]["slot_regions"] == ["eu-west-9", "us-east-1"]
    assert run["unrouted"] == 0
    assert conn.execute(
        "SELECT check_regions FROM public.monitors WHERE id = %s", (m["id"],)
    ).fetchone()["check_regions"] == ["eu-west-1", "us-east-1"]


def test_without_fallback_a_deleted_listed_region_gets_no_job(conn, three_regions):
    """A monitor without fallback whose listed regions were all deleted gets no job and is
    counted unrouted; with one of its regions left, only that one gets a job."""
    gone = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1"], allow_fallback=False)
    half = add_monitor(
        conn, **EVERY_5_MIN_DUE, check_regions=["eu-west-1", "us-east-1"], allow_fallback=False
    )
    conn.execute("DELETE FROM pgpulse.regions WHERE code = 'eu-west-1'")
    run = tick(conn)
    assert outbox_jobs(conn, gone["id"]) == []
    assert [j["region"] for j in outbox_jobs(conn, half["id"])] == ["us-east-1"]
    assert run["unrouted"] == 1
    # the region is back: the waiting monitor is checked there
    add_region(conn, "eu-west-1", fallback_region="ap-south-1")
    run = tick(conn)
    assert [j["region"] for j in outbox_jobs(conn, gone["id"])] == ["eu-west-1"]
    assert run["unrouted"] == 0
