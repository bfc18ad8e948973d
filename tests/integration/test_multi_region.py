"""Several regions per slot (monitors.check_regions): one job per listed region and slot,
each routed by that region's own fallback rules, each exactly once."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.seeding import add_monitor, add_regions, outbox_jobs, tick

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
    row = conn.execute(
        "SELECT next_check_at FROM public.monitors WHERE id = %s", (m["id"],)
    ).fetchone()
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
    row = conn.execute("SELECT next_check_at FROM public.monitors").fetchone()
    assert row["next_check_at"] == m["next_check_at"]
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


@pytest.mark.parametrize(
    "regions, error",
    [
        (["us-east-1", "mars-1"], 'check_regions: unknown region "mars-1"'),
        ([], "monitor_check_regions_list"),
        (["us-east-1", None], "monitor_check_regions_list"),
    ],
)
def test_bad_check_regions_are_refused_with_a_clear_error(conn, three_regions, regions, error):
    with pytest.raises(psycopg.errors.IntegrityError, match=error):
        add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=regions)
    m = add_monitor(conn, **EVERY_5_MIN_DUE, check_regions=None)
    with pytest.raises(psycopg.errors.IntegrityError, match=error):
        conn.execute(
            "UPDATE public.monitors SET check_regions = %s WHERE id = %s", (regions, m["id"])
        )
    assert conn.execute("SELECT count(*) AS n FROM public.monitors").fetchone()["n"] == 1
