"""A new, re-activated or re-phased monitor gets its first job at its slot, whenever in the
minute it happens: its slots within the horizon the ticks have written to go to the outbox
at once (and the relay is woken), not at the next tick, a minute late."""

from __future__ import annotations

import select
from datetime import timedelta

import psycopg
import pytest

from tests.support.cron_minute import Scenario
from tests.support.seeding import add_monitor, add_monitors, outbox_jobs, schedule_of, tick
from tests.support.waiting import wait_for

# (pgpulse keeps a monitor's slots in its own schedule, not in the product's row: the first
# slot is read as the next one on the monitor's phase grid from the writing transaction's
# time, pgpulse.next_slot; what the schedule holds afterwards is already past the jobs
# written at once)


def next_check_at(conn, monitor_id):
    """The monitor's next slot as pgpulse holds it (the product's column is not written)."""
    return schedule_of(conn, [monitor_id])[monitor_id]["next_check_at"]


def test_a_monitor_created_between_ticks_gets_its_first_slot_at_once(conn, db_url, region):
    tick(conn, lookahead_s=60)  # the scheduler has written jobs up to a minute ahead
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN pgpulse_outbox")
        m = conn.execute(
            "INSERT INTO public.monitors (url, check_interval_seconds) "
            "VALUES ('https://new.example', 20) "
            "RETURNING *, pgpulse.next_slot(id, 20, now()) AS first_slot"
        ).fetchone()
        m["next_check_at"] = m["first_slot"]
        # its slots up to the written horizon are there now, each at its exact slot
        got = outbox_jobs(conn, m["id"])
        assert len(got) >= 2
        assert [j["scheduled_for"] for j in got] == [
            m["next_check_at"] + timedelta(seconds=20 * k) for k in range(len(got))
        ]
        assert all(j["deliver_at"] == j["scheduled_for"] for j in got)
        # the relay is told (its timer may be set for later)
        assert select.select([listener.pgconn.socket], [], [], 5)[0]
        assert list(listener.notifies(timeout=1, stop_after=1))
    # the next tick goes on from there: no slot twice, none missing
    after = next_check_at(conn, m["id"])
    assert after == got[-1]["scheduled_for"] + timedelta(seconds=20)
    tick(conn, lookahead_s=90)
    again = [j["scheduled_for"] for j in outbox_jobs(conn, m["id"])]
    assert again == [m["next_check_at"] + timedelta(seconds=20 * k) for k in range(len(again))]
    assert len(again) > len(got)


def test_without_a_recent_tick_nothing_is_written_ahead(conn, region):
    conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds) "
        "SELECT 'https://e.example/' || g, 10 FROM generate_series(1, 50) g"
    )
    assert outbox_jobs(conn) == []
    # nor after a tick that wrote nothing ahead (lookahead 0, as a relay-only test does)
    tick(conn, lookahead_s=0)
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds, next_check_at) "
        "VALUES ('https://late.example', 10, now() + interval '5 seconds')"
    )
    assert outbox_jobs(conn) == []


def test_a_reactivated_monitor_restarts_on_its_grid_at_its_next_slot(conn, region):
    m = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds, is_active, "
        "next_check_at) VALUES ('https://r.example', 30, false, "
        "now() - interval '3 hours') RETURNING *"
    ).fetchone()
    tick(conn, lookahead_s=60)
    assert outbox_jobs(conn) == []
    row = conn.execute(
        "UPDATE public.monitors SET is_active = true WHERE id = %s "
        "RETURNING now() AS t, pgpulse.next_slot(id, 30, now()) AS next_check_at",
        (m["id"],),
    ).fetchone()
    # not a catch-up job for the three hours off: its next slot on its phase grid
    assert row["t"] <= row["next_check_at"] < row["t"] + timedelta(seconds=30)
    got = outbox_jobs(conn, m["id"])
    assert got and got[0]["scheduled_for"] == row["next_check_at"]
    assert conn.execute(
        "SELECT pgpulse.next_slot(%s::uuid, 30, %s) = %s AS ok",
        (m["id"], row["next_check_at"], row["next_check_at"]),
    ).fetchone()["ok"]


def test_a_new_interval_rephases_and_schedules_at_once(conn, region):
    m = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_minutes) "
        "VALUES ('https://p.example', 60) RETURNING *"
    ).fetchone()
    tick(conn, lookahead_s=60)
    conn.execute("DELETE FROM pgpulse.outbox")
    row = conn.execute(
        "UPDATE public.monitors SET check_interval_seconds = 15 WHERE id = %s "
        "RETURNING now() AS t, pgpulse.next_slot(id, 15, now()) AS next_check_at",
        (m["id"],),
    ).fetchone()
    assert row["t"] <= row["next_check_at"] < row["t"] + timedelta(seconds=15)
    got = outbox_jobs(conn, m["id"])
    assert len(got) >= 3 and got[0]["scheduled_for"] == row["next_check_at"]
    assert all(j["expires_at"] - j["scheduled_for"] == timedelta(seconds=15) for j in got)


def test_a_longer_interval_takes_back_the_old_intervals_jobs_still_to_come(conn, region):
    """Moved from every 10 s to once an hour: the minute of 10-second slots written ahead
    goes, a slot already due stays, and the new grid's slots are the only ones to come."""
    m = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds, next_check_at) "
        "VALUES ('https://slower.example', 10, now() - interval '3 seconds') "
        "RETURNING *"
    ).fetchone()
    tick(conn, lookahead_s=60)
    assert len(outbox_jobs(conn, m["id"])) >= 6
    row = conn.execute(
        "UPDATE public.monitors SET check_interval_seconds = 3600 WHERE id = %s "
        "RETURNING now() AS t, pgpulse._written_ahead_to() AS h, "
        "pgpulse.next_slot(id, 3600, now()) AS next_check_at",
        (m["id"],),
    ).fetchone()
    got = outbox_jobs(conn, m["id"])
    due = [j["scheduled_for"] for j in got if j["scheduled_for"] <= row["t"]]
    to_come = [j["scheduled_for"] for j in got if j["scheduled_for"] > row["t"]]
    assert due == [m["next_check_at"]]
    assert to_come == ([row["next_check_at"]] if row["next_check_at"] <= row["h"] else [])
    assert all(
        j["expires_at"] - j["scheduled_for"] == timedelta(seconds=3600)
        for j in got
        if j["scheduled_for"] > row["t"]
    )


class CronDatabaseRegion(Scenario):
    """This test's region in the cluster's cron database, where pg_cron ticks every minute."""

    code = "first-check-1"

    def arrange(self) -> None:
        self.conn = self.resources.enter_context(
            psycopg.connect(
                self.request.getfixturevalue("cron_db_url"),
                autocommit=True,
                row_factory=psycopg.rows.dict_row,
            )
        )
        self.resources.callback(self.remove_rows)
        self.conn.execute(
            "INSERT INTO pgpulse.regions (code) VALUES (%s) ON CONFLICT DO NOTHING", (self.code,)
        )

    def remove_rows(self) -> None:
        self.conn.execute("DELETE FROM public.monitors WHERE preferred_region = %s", (self.code,))
        self.conn.execute("DELETE FROM pgpulse.outbox WHERE region = %s", (self.code,))
        self.conn.execute("DELETE FROM pgpulse.regions WHERE code = %s", (self.code,))


@pytest.mark.slow
@pytest.mark.cron_minute(scenario=CronDatabaseRegion)
def test_under_pg_cron_a_monitor_created_mid_minute_is_scheduled_at_its_slot(cron_minute):
    """In the cluster's cron database pg_cron ticks every minute; a monitor created after
    one of its ticks has its first slot in the outbox at once, not from the next tick."""
    conn, code = cron_minute.conn, cron_minute.code
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM pgpulse.tick_runs WHERE trigger = 'pg_cron' AND finished_at IS NOT "
            "NULL AND started_at > now() - interval '2 minutes'"
        ).fetchone(),
        cron_minute.left(75),
        "a pg_cron tick",
    )
    m = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds, preferred_region, "
        "allow_fallback) VALUES ('https://cron-first.example', 10, %s, false) "
        "RETURNING id, now() AS t, pgpulse.next_slot(id, 10, now()) AS next_check_at",
        (code,),
    ).fetchone()
    first = conn.execute(
        "SELECT min(deliver_at) AS d FROM pgpulse.outbox WHERE monitor_id = %s", (m["id"],)
    ).fetchone()["d"]
    assert first == m["next_check_at"] < m["t"] + timedelta(seconds=10)


def test_a_minutes_tick_started_late_finds_its_first_slots_written(conn, region):
    """pg_cron starts a minute's tick up to about a second late (seen: 12:14:01.008), and its
    first chunk commits a moment after that. The previous tick's horizon must reach past
    both: with exactly one minute, 1,588 jobs of that second were published up to 1.2 s late."""
    ids = {
        ahead_s: add_monitor(conn, check_interval_minutes=5, due=f"{ahead_s} seconds")["id"]
        for ahead_s in (62, 68, 80)
    }
    conn.execute("CALL pgpulse.tick(p_trigger => 'test')")  # as pg_cron's job runs it
    written = {ahead_s for ahead_s, monitor_id in ids.items() if outbox_jobs(conn, monitor_id)}
    # written through the next minute's first seconds (a tick 8 s late still finds its
    # first slots there), and no further
    assert written == {62, 68}


def _backlog(conn, n):
    """n monitors a tick has not reached yet: due in pgpulse's schedule (a tick still
    running, say), with nothing in the outbox."""
    ids = [m["id"] for m in add_monitors(conn, n, due=None, check_interval_minutes=5)]
    conn.execute(
        "UPDATE pgpulse.schedule SET next_check_at = now() - interval '5 seconds'"
        " WHERE monitor_id = ANY (%s)",
        (ids,),
    )
    conn.execute("DELETE FROM pgpulse.outbox WHERE monitor_id = ANY (%s)", (ids,))
    return ids


def _jobs_of(conn, ids):
    return conn.execute(
        "SELECT count(*) AS n FROM pgpulse.outbox WHERE monitor_id = ANY (%s)", (ids,)
    ).fetchone()["n"]


def test_a_product_write_schedules_its_own_monitors_never_the_ticks_backlog(conn, region):
    # A product's INSERT, UPDATE or "check now" while a tick runs wrote the jobs of every due
    # monitor the tick had not reached, in the product's transaction: a one-row INSERT took
    # as long as the rest of the tick (305 ms of a 20,000-monitor tick, measured by
    # `pgpulse bench follow`) and held those monitors' rows.
    tick(conn, lookahead_s=60)
    backlog = _backlog(conn, 50)

    new = add_monitor(conn, due=None, check_interval_seconds=20)
    assert outbox_jobs(conn, new["id"])  # its own first slots, at once
    other = add_monitor(conn, due=None, is_active=False, check_interval_seconds=20)
    conn.execute("UPDATE public.monitors SET is_active = true WHERE id = %s", (other["id"],))
    assert outbox_jobs(conn, other["id"])  # re-activated: its next slot, at once
    conn.execute("UPDATE public.monitors SET url = url || '?x' WHERE id = %s", (new["id"],))
    conn.execute("SELECT pgpulse.check_now(%s)", (str(new["id"]),))
    assert _jobs_of(conn, backlog) == 0  # the tick's, left to the tick

    assert tick(conn, lookahead_s=60)["monitors_claimed"] >= len(backlog)
    assert _jobs_of(conn, backlog) == len(backlog)


@pytest.mark.parametrize("forged", ["not a flag", "id", "columns", ""])
def test_a_forged_follow_flag_never_fails_or_skips_the_product_write(conn, region, forged):
    """The flag _follow_update_mark sets for its statement is a setting any session may set:
    set beforehand, it neither fails the product's write nor stops it being followed, and an
    UPDATE of a column pgpulse does not follow still changes nothing of pgpulse's."""
    tick(conn, lookahead_s=60)
    m = add_monitor(conn, due=None, is_active=False, check_interval_seconds=20)
    with conn.transaction():
        conn.execute("SELECT set_config('pgpulse.follow_named_1', %s, true)", (forged,))
        conn.execute("UPDATE public.monitors SET created_at = now() WHERE id = %s", (m["id"],))
        conn.execute("UPDATE public.monitors SET is_active = true WHERE id = %s", (m["id"],))
    assert outbox_jobs(conn, m["id"])
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.follow_log").fetchone()["n"] == 0
