"""Maintenance windows: once or weekly, in an IANA time zone, for one monitor, a set or all.
Slots inside are skipped and counted, the first slot after is on time, and windows keep
their wall-clock hours across DST changes: the tick is run with its clock moved minute by
minute through spring-forward and fall-back in Europe/Berlin and America/New_York."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.seeding import add_monitor, add_monitors, insert_row, tick

UTC = UTC


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_clock(conn, start: datetime, end: datetime, step_s: int = 60) -> int:
    """Ticks (one chunk each, 60 s lookahead) with the clock at start, start + step, ... end;
    returns the slots skipped."""
    skipped = 0
    at = start
    while at <= end:
        row = conn.execute(
            """
            SELECT * FROM pgpulse._tick_chunk(%(at)s::timestamptz + interval '60 seconds',
                                              5000, 0, false, %(at)s)""",
            {"at": at},
        ).fetchone()
        skipped += row["in_windows"]
        at += timedelta(seconds=step_s)
    return skipped


def fold_skipped_slots(conn) -> None:
    """A tick with nothing due: it folds the slots counted in pgpulse.maintenance_skips into
    their windows' skipped_slots, as every tick does at its end (_tick_chunk, which
    run_clock calls, only appends to maintenance_skips)."""
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() + interval '1 day'")
    assert tick(conn, lookahead_s=0)["monitors_claimed"] == 0


def scheduled(conn) -> list[datetime]:
    return [
        r["scheduled_for"]
        for r in conn.execute(
            "SELECT scheduled_for, deliver_at FROM pgpulse.outbox ORDER BY 1"
        ).fetchall()
    ]


DST_CASES = {
    # Berlin springs forward at 01:00Z (02:00 CET -> 03:00 CEST): Sundays 01:00-04:00 local
    # lasts two hours, 00:00Z-02:00Z
    "berlin-spring-forward": (
        {
            "time_zone": "Europe/Berlin",
            "weekdays": [7],
            "start_time": "01:00",
            "duration": "3 hours",
        },
        "2026-03-28 22:00",
        "2026-03-29 04:00",
        [("2026-03-29 00:00", "2026-03-29 02:00")],
    ),
    # Berlin falls back at 01:00Z (03:00 CEST -> 02:00 CET): 02:00-03:00 local happens twice,
    # 00:00Z-01:00Z and 01:00Z-02:00Z, and the window holds both
    "berlin-fall-back": (
        {
            "time_zone": "Europe/Berlin",
            "weekdays": [7],
            "start_time": "02:00",
            "duration": "1 hour",
        },
        "2026-10-24 22:00",
        "2026-10-25 04:00",
        [("2026-10-25 00:00", "2026-10-25 02:00")],
    ),
    # New York springs forward at 07:00Z (02:00 EST -> 03:00 EDT): once, 01:30-03:30 local
    # is one hour, 06:30Z-07:30Z
    "new-york-spring-forward": (
        {
            "time_zone": "America/New_York",
            "starts_local": "2026-03-08 01:30",
            "ends_local": "2026-03-08 03:30",
        },
        "2026-03-08 05:00",
        "2026-03-08 09:00",
        [("2026-03-08 06:30", "2026-03-08 07:30")],
    ),
    # New York falls back at 06:00Z (02:00 EDT -> 01:00 EST): 00:30-01:30 local is
    # 04:30Z-05:30Z, and 01:00-01:30 local again at 06:00Z-06:30Z; 01:30-02:00 EDT
    # (05:30Z-06:00Z) is outside
    "new-york-fall-back": (
        {
            "time_zone": "America/New_York",
            "starts_local": "2026-11-01 00:30",
            "ends_local": "2026-11-01 01:30",
        },
        "2026-11-01 03:00",
        "2026-11-01 08:00",
        [("2026-11-01 04:30", "2026-11-01 05:30"), ("2026-11-01 06:00", "2026-11-01 06:30")],
    ),
}


@pytest.mark.parametrize("case", list(DST_CASES))
def test_windows_keep_their_wall_clock_hours_across_dst(conn, region, case):
    window, start, end, skipped_ranges = DST_CASES[case]
    start, end = utc(start), utc(end)
    m = add_monitor(conn, check_interval_seconds=600, due=start)
    w = insert_row(conn, "pgpulse.maintenance_windows", name=case, **window)

    skipped = run_clock(conn, start, end)

    every = [
        start + timedelta(minutes=10 * k)
        for k in range(int((end - start).total_seconds() // 600) + 1)
    ]
    inside = [s for s in every if any(utc(a) <= s < utc(b) for a, b in skipped_ranges)]
    got = scheduled(conn)
    # each slot outside the window once, none inside, none late: deliver_at is the slot
    assert [s for s in got if s <= end] == [s for s in every if s not in inside]
    assert conn.execute(
        "SELECT bool_and(deliver_at = scheduled_for) AS ok FROM pgpulse.outbox"
    ).fetchone()["ok"]
    # the first slot after each range is there, on time
    for _, b in skipped_ranges:
        assert utc(b) in got
    assert skipped == len(inside) > 0
    fold_skipped_slots(conn)
    assert conn.execute(
        "SELECT skipped_slots FROM pgpulse.maintenance_windows WHERE id = %s", (w["id"],)
    ).fetchone()["skipped_slots"] == len(inside)
    # the window function agrees at every slot, with explicit timestamps
    for s in every:
        at = conn.execute(
            "SELECT pgpulse.maintenance_window_at(%s, %s) AS w", (str(m["id"]), s)
        ).fetchone()["w"]
        assert (at == w["id"]) == (s in inside), s


def test_a_window_applies_to_one_monitor_a_set_or_all(conn, region):
    ms = [add_monitor(conn, check_interval_seconds=30, due="5 seconds") for _ in range(4)]
    ids = [m["id"] for m in ms]
    # in Berlin time, from a minute ago to ten minutes from now
    local = "(now() AT TIME ZONE 'Europe/Berlin')"
    window = conn.execute(
        "INSERT INTO pgpulse.maintenance_windows (name, monitor_ids, time_zone, starts_local, "
        f"ends_local) VALUES ('one', %s, 'Europe/Berlin', {local} - interval '1 minute', "
        f"{local} + interval '10 minutes') RETURNING id",
        ([str(ids[0])],),
    ).fetchone()["id"]
    run = tick(conn, lookahead_s=60)  # slots at +5 and +35 s
    assert run["maintenance_skipped"] == 2  # two 30-second slots of the first monitor
    per_monitor = {
        r["monitor_id"]: r["n"]
        for r in conn.execute("SELECT monitor_id, count(*) AS n FROM pgpulse.outbox GROUP BY 1")
    }
    assert ids[0] not in per_monitor and all(per_monitor[i] == 2 for i in ids[1:])

    # the same window widened to a set, then to every monitor: the jobs already written
    # for them inside it are taken back and counted
    conn.execute(
        "UPDATE pgpulse.maintenance_windows SET monitor_ids = %s WHERE id = %s",
        ([str(i) for i in ids[:3]], window),
    )
    assert sorted(per_monitor_now(conn)) == sorted([ids[3]])
    conn.execute(
        "UPDATE pgpulse.maintenance_windows SET monitor_ids = NULL WHERE id = %s", (window,)
    )
    assert per_monitor_now(conn) == []
    assert (
        conn.execute("SELECT skipped_slots FROM pgpulse.maintenance_windows").fetchone()[
            "skipped_slots"
        ]
        == 8
    )


def per_monitor_now(conn) -> list:
    return [r["monitor_id"] for r in conn.execute("SELECT DISTINCT monitor_id FROM pgpulse.outbox")]


def test_slots_after_a_window_that_ends_are_written_again(conn, region):
    m = add_monitor(conn, check_interval_seconds=10, due="1 second")
    local = "(now() AT TIME ZONE 'America/New_York')"
    conn.execute(
        "INSERT INTO pgpulse.maintenance_windows (time_zone, starts_local, ends_local) "
        f"VALUES ('America/New_York', {local} - interval '1 hour', {local} + interval '25 seconds')"
    )
    ends = conn.execute(
        f"SELECT ({local} + interval '25 seconds') AT TIME ZONE 'America/New_York' AS t"
    ).fetchone()["t"]
    tick(conn, lookahead_s=60)
    got = scheduled(conn)
    assert got and all(s >= ends for s in got)
    # the first slot after the end is there, exactly on the monitor's grid
    assert got[0] - ends < timedelta(seconds=10)
    assert (got[0] - m["next_check_at"]).total_seconds() % 10 == 0


@pytest.mark.parametrize(
    "change",
    [
        "next_check_at = now()",  # "check now" from the product: its slot is written at once
        "check_interval_seconds = 10",  # re-phased: its slots on the new grid are written
    ],
)
def test_a_product_transaction_open_on_a_monitor_in_a_window_does_not_stop_the_tick(
    conn, db_url, region, change
):
    """A product's transaction that changed a monitor inside a maintenance window and stays
    open (its trigger wrote that monitor's slots at once, and skipped them) holds no lock the
    tick needs: the tick claims every other due monitor and drains. (When both wrote the
    window's skipped_slots, the tick waited for that row and stopped with lock_timeout,
    claiming none.) The skipped slots still reach maintenance_windows.skipped_slots: the
    tick's at its end, the product's at the end of the tick after it commits."""
    held = add_monitor(conn, check_interval_minutes=5, due="1 hour")
    others = add_monitors(conn, 40, check_interval_minutes=5, due="1 hour")
    local = "(now() AT TIME ZONE 'Europe/Berlin')"
    window = conn.execute(
        "INSERT INTO pgpulse.maintenance_windows (name, time_zone, starts_local, ends_local) "
        f"VALUES ('all', 'Europe/Berlin', {local} - interval '1 minute', "
        f"{local} + interval '10 minutes') RETURNING id"
    ).fetchone()["id"]
    tick(conn, lookahead_s=60)  # a tick ran lately: product writes schedule their slots at once
    # time passes (pgpulse's clock of the monitor): the held monitor is due
    conn.execute(
        "UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'"
        " WHERE monitor_id = %s",
        (held["id"],),
    )
    with psycopg.connect(db_url) as product:  # not autocommit: the transaction stays open
        product.execute(f"UPDATE public.monitors SET {change} WHERE id = %s", (held["id"],))
        # its slots were taken at once in the product's transaction, inside the window
        product_skipped = product.execute(
            "SELECT coalesce(sum(slots), 0) FROM pgpulse.maintenance_skips"
        ).fetchone()[0]
        assert product_skipped >= 1
        conn.execute(
            "UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'"
            " WHERE monitor_id <> %s",
            (held["id"],),
        )

        run = tick(conn, budget_s=5)

        assert run["stop_reason"] == "drained", run
        assert run["monitors_claimed"] == len(others)
        assert run["maintenance_skipped"] == len(others)
        assert conn.execute(
            "SELECT skipped_slots FROM pgpulse.maintenance_windows WHERE id = %s", (window,)
        ).fetchone()["skipped_slots"] == len(others)
        product.commit()
    # the product's skipped slots are folded by the next tick
    tick(conn, lookahead_s=0)
    assert (
        conn.execute(
            "SELECT skipped_slots FROM pgpulse.maintenance_windows WHERE id = %s", (window,)
        ).fetchone()["skipped_slots"]
        == len(others) + product_skipped
    )
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0


@pytest.mark.parametrize(
    "cols, error",
    [
        (
            {
                "time_zone": "Mars/Olympus_Mons",
                "starts_local": "2026-01-01 00:00",
                "ends_local": "2026-01-01 01:00",
            },
            'unknown time zone "Mars/Olympus_Mons"',
        ),
        (
            {
                "time_zone": "UTC",
                "starts_local": "2026-01-01 02:00",
                "ends_local": "2026-01-01 01:00",
            },
            "maintenance_once_or_weekly",
        ),
        (
            {"time_zone": "UTC", "weekdays": [8], "start_time": "01:00", "duration": "1 hour"},
            "maintenance_once_or_weekly",
        ),
        (
            {"time_zone": "UTC", "weekdays": [1], "start_time": "01:00"},
            "maintenance_once_or_weekly",
        ),
        (
            {
                "time_zone": "UTC",
                "monitor_ids": [],
                "weekdays": [1],
                "start_time": "01:00",
                "duration": "1 hour",
            },
            "maintenance_monitor_ids_list",
        ),
    ],
)
def test_bad_windows_are_refused_with_a_clear_error(conn, cols, error):
    with pytest.raises(psycopg.errors.DatabaseError, match=error):
        insert_row(conn, "pgpulse.maintenance_windows", **cols)
    assert (
        conn.execute("SELECT count(*) AS n FROM pgpulse.maintenance_windows").fetchone()["n"] == 0
    )
