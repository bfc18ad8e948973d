"""Intervals in seconds (check_interval_seconds, 10 s to 24 h): the minute tick writes every
slot up to its horizon with its exact deliver_at, phases are spread and drift-free, a
monitor that missed many slots gets one catch-up job, and check_interval_minutes keeps
working beside the new column."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.seeding import (
    add_monitor,
    add_monitors,
    add_region,
    follow_logged,
    outbox_jobs,
    schedule_of,
    tick,
)


def slots(conn, monitor_id) -> list:
    return [
        r["scheduled_for"]
        for r in conn.execute(
            "SELECT scheduled_for FROM pgpulse.outbox WHERE monitor_id = %s ORDER BY 1",
            (monitor_id,),
        )
    ]


def test_a_ten_second_monitor_gets_every_slot_of_the_minute_with_exact_times(conn, region):
    m = add_monitor(conn, due=None, check_interval_seconds=10)
    first = m["next_check_at"]
    run = tick(conn, lookahead_s=60)
    jobs = conn.execute("SELECT * FROM pgpulse.outbox ORDER BY scheduled_for").fetchall()
    horizon = run["started_at"] + timedelta(seconds=60)
    # every slot from the first up to the horizon, 10 s apart, on the monitor's phase grid
    assert [j["scheduled_for"] for j in jobs] == [
        first + timedelta(seconds=10 * k) for k in range(len(jobs))
    ]
    assert len(jobs) in (6, 7)
    assert jobs[-1]["scheduled_for"] <= horizon + timedelta(seconds=1)
    assert all(j["deliver_at"] == j["scheduled_for"] for j in jobs)
    assert all(j["expires_at"] == j["scheduled_for"] + timedelta(seconds=10) for j in jobs)
    assert len({j["job_id"] for j in jobs}) == len(jobs)
    assert run["monitors_claimed"] == 1 and run["jobs_written"] == len(jobs)
    after = schedule_of(conn, [m["id"]])[m["id"]]["next_check_at"]
    assert after == jobs[-1]["scheduled_for"] + timedelta(seconds=10)


def test_ticks_continue_on_the_same_grid_without_gaps_or_repeats(conn, region):
    m = add_monitor(conn, due=None, check_interval_seconds=15, next_check_at=None)
    tick(conn, lookahead_s=20)
    tick(conn, lookahead_s=50)
    tick(conn, lookahead_s=90)
    got = slots(conn, m["id"])
    assert len(got) >= 6
    assert got == [m["next_check_at"] + timedelta(seconds=15 * k) for k in range(len(got))]
    # on the phase grid of its id: drift-free whatever the ticks' timing
    assert conn.execute(
        "SELECT bool_and(pgpulse.next_slot(%s, 15, s) = s) AS ok FROM unnest(%s::timestamptz[]) s",
        (m["id"], got),
    ).fetchone()["ok"]


@pytest.mark.slow  # seconds of real time: outside make check's lane
def test_a_long_tick_claims_each_sub_minute_monitor_once(conn, region):
    # a tick slowed down (every chunk waits 0.3 s) writes up to its start plus its
    # lookahead: its later chunks do not claim the ten-second monitors again for a next slot
    add_monitors(conn, 40, due=None, check_interval_seconds=10)  # phases spread over 10 s
    conn.execute("""
        CREATE FUNCTION public.test_slow_chunk() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
        CREATE TRIGGER test_slow_chunk AFTER INSERT ON pgpulse.outbox
            FOR EACH STATEMENT EXECUTE FUNCTION public.test_slow_chunk();""")
    try:
        run = tick(conn, lookahead_s=60, chunk=4)
    finally:
        conn.execute(
            "DROP TRIGGER test_slow_chunk ON pgpulse.outbox;DROP FUNCTION public.test_slow_chunk()"
        )
    assert (run["finished_at"] - run["started_at"]).total_seconds() > 3  # ten chunks or more
    assert run["monitors_claimed"] == 40, run
    horizon = run["started_at"] + timedelta(seconds=60)
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM pgpulse.outbox WHERE scheduled_for > %s", (horizon,)
        ).fetchone()["n"]
        == 0
    )


def test_a_long_missed_monitor_gets_one_catch_up_job_then_its_future_slots(conn, region):
    m = add_monitor(conn, due=None, check_interval_seconds=10)
    grid = m["next_check_at"]
    # the scheduler was away for an hour (pgpulse's own clock of the monitor moved back)
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = next_check_at - interval '1 hour'")
    run = tick(conn, lookahead_s=30)
    got = slots(conn, m["id"])
    # the latest missed slot (not after now) and the slots up to the horizon: no replay of
    # the 360 missed ones
    past = [s for s in got if s <= run["started_at"]]
    assert len(past) == 1 and len(got) in (4, 5)
    assert run["started_at"] - past[0] < timedelta(seconds=10)
    assert all((s - grid).total_seconds() % 10 == 0 for s in got)


def test_phases_of_sub_minute_monitors_are_spread_over_the_interval(conn):
    rows = conn.execute("""
        INSERT INTO public.monitors (url, check_interval_seconds)
        SELECT 'https://example.com/' || g, 10 FROM generate_series(1, 1000) g
        RETURNING id, created_at""").fetchall()
    follow_logged(conn)  # a bulk insert: the relay follows it when woken
    followed = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    held = schedule_of(conn)
    # the next slot on each one's grid from when it was followed
    assert all(
        r["created_at"] <= held[r["id"]]["next_check_at"] < followed + timedelta(seconds=10)
        for r in rows
    )
    per_second = conn.execute("""
        SELECT count(*) AS n FROM pgpulse.schedule
         GROUP BY floor(extract(epoch FROM next_check_at))::bigint % 10""").fetchall()
    # ~100 per second of the 10, never all at once
    assert len(per_second) == 10 and max(r["n"] for r in per_second) < 150


def test_minutes_and_seconds_stay_in_step(conn):
    """pgpulse's interval (its schedule's check_interval_seconds) follows whichever of the
    product's two columns was set or changed last; the product's columns are its own and
    pgpulse no longer writes one to match the other."""

    def interval_of(monitor_id):
        return schedule_of(conn, [monitor_id])[monitor_id]["check_interval_seconds"]

    by_minutes = add_monitor(conn, due=None, check_interval_minutes=3)
    assert by_minutes["check_interval_seconds"] == 180
    by_seconds = add_monitor(conn, due=None, check_interval_seconds=30)
    assert by_seconds["check_interval_seconds"] == 30
    both = add_monitor(conn, due=None, check_interval_minutes=9, check_interval_seconds=130)
    assert both["check_interval_seconds"] == 130
    default = add_monitor(conn, due=None, next_check_at=None)
    assert default["check_interval_seconds"] == 300

    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 7 WHERE id = %s",
        (by_seconds["id"],),
    )
    assert interval_of(by_seconds["id"]) == 420
    conn.execute(
        "UPDATE public.monitors SET check_interval_seconds = 20 WHERE id = %s",
        (by_minutes["id"],),
    )
    assert interval_of(by_minutes["id"]) == 20
    # an update of other columns leaves the interval alone
    conn.execute(
        "UPDATE public.monitors SET url = 'https://example.com/t' WHERE id = %s",
        (by_minutes["id"],),
    )
    assert interval_of(by_minutes["id"]) == 20
    # and pgpulse never wrote the product's columns
    row = conn.execute(
        "SELECT check_interval_minutes, check_interval_seconds FROM public.monitors WHERE id = %s",
        (by_minutes["id"],),
    ).fetchone()
    assert (row["check_interval_minutes"], row["check_interval_seconds"]) == (3, 20)


@pytest.mark.parametrize("seconds", [0, 9, 86401, -10])
def test_an_interval_out_of_range_is_parked_by_name(conn, region, seconds):
    """The product's write succeeds (pgpulse never fails it); pgpulse parks the monitor with
    the reason, writes no job for it, and schedules it again once the interval is fixed."""
    m = add_monitor(conn, due="-10 seconds", check_interval_seconds=seconds)
    assert m["parked"] == f"interval: {seconds} s is not 10 s to 1 day"
    run = tick(conn, lookahead_s=60)
    assert run["monitors_claimed"] == 0 and outbox_jobs(conn, m["id"]) == []
    conn.execute("UPDATE public.monitors SET check_interval_seconds = 30 WHERE id = %s", (m["id"],))
    assert schedule_of(conn, [m["id"]])[m["id"]]["parked"] is None
    tick(conn, lookahead_s=60)
    assert outbox_jobs(conn, m["id"])


def test_sub_minute_and_multi_region_together(conn):
    for code in ("us-east-1", "eu-west-1"):
        add_region(conn, code, is_default=code == "us-east-1")
    m = add_monitor(
        conn,
        due=None,
        check_interval_seconds=20,
        check_regions=["us-east-1", "eu-west-1"],
        next_check_at=None,
    )
    tick(conn, lookahead_s=60)
    rows = conn.execute(
        "SELECT region, scheduled_for FROM pgpulse.outbox ORDER BY scheduled_for, region"
    ).fetchall()
    times = sorted({r["scheduled_for"] for r in rows})
    assert len(times) == 3 and len(rows) == 6
    assert times == [m["next_check_at"] + timedelta(seconds=20 * k) for k in range(3)]
    assert {r["region"] for r in rows} == {"us-east-1", "eu-west-1"}


def test_the_tick_chunk_is_never_jit_compiled(conn):
    """Its row estimates (1000 slots a monitor) once made PostgreSQL JIT-compile every chunk:
    seconds per chunk, a tick ten times slower."""
    config = conn.execute("SELECT proconfig FROM pg_proc WHERE proname = '_tick_chunk'").fetchone()[
        "proconfig"
    ]
    assert "jit=off" in config
