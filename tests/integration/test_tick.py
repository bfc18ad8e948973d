"""The tick (pgpulse.tick) against a real PostgreSQL: what is due, the jobs it writes,
concurrency, phase and drift, catch-up, lookahead, the time budget, the run record and
the NOTIFY. Each test has its own freshly migrated database (the `conn` fixture)."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.seeding import add_monitors, add_region, follow_logged, schedule_of, tick

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------ helpers


def outbox(conn) -> list[dict]:
    return conn.execute(
        "SELECT * FROM pgpulse.outbox ORDER BY monitor_id, scheduled_for"
    ).fetchall()


def product_rows(conn) -> dict:
    """The product's monitors as stored, with each row version's xmin and ctid: a row any
    transaction wrote (even with the same values) gets a new xmin."""
    return {
        r["id"]: r
        for r in conn.execute(
            "SELECT xmin::text AS row_xmin, ctid::text AS row_ctid, * FROM public.monitors"
        ).fetchall()
    }


def epoch_text(ts: datetime) -> str:
    """extract(epoch FROM ts)::text: seconds with six decimals, computed exactly."""
    delta = ts - EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return f"{seconds}.{delta.microseconds:06d}"


def expected_job_id(monitor_id: uuid.UUID, region: str, slot: datetime) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"{monitor_id}/{region}/{epoch_text(slot)}".encode()).hexdigest())


# ------------------------------------------------------------------ what is due


def test_due_monitor_gets_one_job_not_due_and_inactive_get_none(conn, region):
    due = add_monitors(
        conn,
        1,
        check_interval_minutes=5,
        due="-10 seconds",
        method="HEAD",
        timeout_ms=3000,
        expected_status=[200, 204],
        check_retries=2,
        check_retry_delay_ms=500,
        criticality="critical",
    )[0]
    later = add_monitors(conn, 1, check_interval_minutes=5, due="5 minutes")[0]
    inactive = add_monitors(conn, 1, check_interval_minutes=5, due="-10 seconds", is_active=False)[
        0
    ]

    run = tick(conn)

    assert (run["monitors_claimed"], run["jobs_written"], run["unrouted"]) == (1, 1, 0)
    [job] = outbox(conn)
    slot = due["next_check_at"]
    assert job["monitor_id"] == due["id"]
    assert job["region"] == region
    assert job["criticality"] == "critical"
    assert job["scheduled_for"] == slot
    assert job["deliver_at"] == slot
    assert job["expires_at"] == slot + timedelta(minutes=5)
    assert job["allow_fallback"] is True
    assert job["attempts"] == 0
    assert job["job_id"] == expected_job_id(due["id"], region, slot)
    assert job["payload"] == {
        "url": due["url"],
        "method": "HEAD",
        "timeout_ms": 3000,
        "expected_status": [200, 204],
        "retry": {"max_attempts": 3, "delay_ms": 500},
    }

    # the tick bumped pgpulse's schedule, and only the due monitor's row
    held = schedule_of(conn)
    assert held[due["id"]]["next_check_at"] == slot + timedelta(minutes=5)
    assert held[due["id"]]["last_scheduled_at"] is not None
    for untouched in (later, inactive):
        assert held[untouched["id"]]["next_check_at"] == untouched["next_check_at"]
        assert held[untouched["id"]]["last_scheduled_at"] is None
    # the product reads it through the view; its own columns are not written
    [view] = conn.execute(
        "SELECT * FROM pgpulse.monitor_schedule WHERE monitor_id = %s", (due["id"],)
    ).fetchall()
    assert (view["next_check_at"], view["last_scheduled_at"], view["parked"]) == (
        held[due["id"]]["next_check_at"],
        held[due["id"]]["last_scheduled_at"],
        None,
    )
    assert product_rows(conn)[due["id"]]["next_check_at"] == slot

    # the slot is never emitted twice
    again = tick(conn)
    assert (again["monitors_claimed"], again["jobs_written"]) == (0, 0)
    assert len(outbox(conn)) == 1


def test_a_tick_leaves_every_product_row_untouched(conn, region):
    """The tick schedules from pgpulse.schedule only: not one of the product's rows gets a
    new row version (xmin, ctid), however it is scheduled: several chunks, sub-minute slots,
    a catch-up, several regions. An ORM's later full-row save, which writes back the stale
    next_check_at it read, is no "check now": the schedule keeps its own next slot."""
    monitors = [
        *add_monitors(conn, 120, check_interval_minutes=5, due="-10 seconds"),
        *add_monitors(conn, 5, check_interval_seconds=15, due="-5 seconds"),
        *add_monitors(conn, 5, check_interval_minutes=2, due="-3 hours"),
        *add_monitors(conn, 5, check_interval_minutes=5, check_regions=[region]),
        *add_monitors(conn, 5, check_interval_minutes=5, due="10 minutes"),
        *add_monitors(conn, 5, check_interval_minutes=5, is_active=False),
    ]
    due = {m["id"] for m in monitors[:135]}
    before = product_rows(conn)

    run = tick(conn, chunk=20)

    assert run["monitors_claimed"] == len(due) and run["chunks"] > 1
    assert {j["monitor_id"] for j in outbox(conn)} == due
    held = schedule_of(conn)
    assert {m for m, s in held.items() if s["last_scheduled_at"] is not None} == due
    after = product_rows(conn)
    assert after == before
    stale = {m: before[m]["next_check_at"] for m in due}
    assert all(held[m]["next_check_at"] > stale[m] for m in due)

    conn.execute(
        "UPDATE public.monitors SET url = url || '?saved', next_check_at = next_check_at "
        "WHERE id = ANY(%s)",
        (list(due),),
    )
    assert {m: s["next_check_at"] for m, s in schedule_of(conn, list(due)).items()} == {
        m: held[m]["next_check_at"] for m in due
    }
    # no slot went back: nothing due again, no job written twice
    jobs = len(outbox(conn))
    assert tick(conn, chunk=20, lookahead_s=0)["monitors_claimed"] == 0
    assert len(outbox(conn)) == jobs


def test_every_due_monitor_gets_exactly_one_job_per_slot(conn, region):
    monitors = add_monitors(conn, 700, check_interval_minutes=3, due="-20 seconds")
    run = tick(conn, chunk=64)
    assert (run["monitors_claimed"], run["jobs_written"], run["chunks"]) == (700, 700, 11)
    jobs = outbox(conn)
    assert sorted(j["monitor_id"] for j in jobs) == sorted(m["id"] for m in monitors)
    assert {(j["scheduled_for"], j["deliver_at"]) for j in jobs} == {
        (m["next_check_at"], m["next_check_at"]) for m in monitors
    }


def test_a_changed_check_reaches_the_next_job_and_check_spec_cannot_drift(conn, region):
    [monitor] = add_monitors(conn, 1, check_interval_minutes=5, due="-10 seconds")
    conn.execute(
        "UPDATE public.monitors SET url = 'https://changed.example/health', "
        "expected_status = '{200,301}', check_retries = 0 WHERE id = %s",
        (monitor["id"],),
    )
    # the check workers receive is pgpulse's own (pgpulse.schedule.check_spec, built from
    # the product's columns): the product's table has no column that could forge it
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'monitors' "
            "AND column_name = 'check_spec'"
        ).fetchone()["n"]
        == 0
    )
    tick(conn)
    [job] = outbox(conn)
    assert job["payload"] == {
        "url": "https://changed.example/health",
        "method": "GET",
        "timeout_ms": 10000,
        "expected_status": [200, 301],
        "retry": {"max_attempts": 1, "delay_ms": 2000},
    }
    # the tick's own bump of next_check_at leaves the check as it was built
    assert schedule_of(conn)[monitor["id"]]["check_spec"] == job["payload"]


def test_job_id_is_stable_for_monitor_region_and_slot(conn, region):
    [m] = add_monitors(conn, 1, check_interval_minutes=5, due="-1 minute")
    slot = m["next_check_at"]
    tick(conn)
    [first] = outbox(conn)
    assert first["job_id"] == expected_job_id(m["id"], region, slot)

    # the relay published it; the same slot scheduled again (pgpulse's clock moved back)
    # gets the same id
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = %s", (slot,))
    tick(conn)
    [second] = outbox(conn)
    assert (second["job_id"], second["scheduled_for"]) == (first["job_id"], slot)

    # a slot already in the outbox is not written twice, and does not wedge the tick
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = %s", (slot,))
    run = tick(conn)
    assert (run["monitors_claimed"], run["jobs_written"]) == (1, 0)
    assert len(outbox(conn)) == 1
    assert schedule_of(conn)[m["id"]]["next_check_at"] == slot + timedelta(minutes=5)


def test_a_slot_already_in_the_outbox_is_kept_and_the_rest_of_the_chunk_written(conn, region):
    monitors = add_monitors(conn, 30, check_interval_minutes=5, due="-1 minute")
    tick(conn)
    # the relay published all but one, which failed once and was put back
    kept = monitors[7]
    conn.execute("DELETE FROM pgpulse.outbox WHERE monitor_id <> %s", (kept["id"],))
    conn.execute("UPDATE pgpulse.outbox SET attempts = 1, last_error = 'HTTP 503'")
    # pgpulse's clock moves every monitor back by one slot: the tick schedules them again
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = next_check_at - interval '5 minutes'")

    run = tick(conn, chunk=100)

    assert (run["monitors_claimed"], run["jobs_written"], run["chunks"]) == (30, 29, 1)
    jobs = {j["monitor_id"]: j for j in outbox(conn)}
    assert len(jobs) == 30
    assert (jobs[kept["id"]]["attempts"], jobs[kept["id"]]["last_error"]) == (1, "HTTP 503")
    assert all(j["attempts"] == 0 for m, j in jobs.items() if m != kept["id"])
    bumped = conn.execute(
        "SELECT count(*) AS n FROM pgpulse.schedule WHERE next_check_at > now()"
    ).fetchone()["n"]
    assert bumped == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"chunk": 0}, "chunk must be 1 to 100000 monitors, not 0"),
        ({"chunk": 100001}, "chunk must be 1 to 100000 monitors"),
        ({"budget_s": 0}, "budget must be more than 0 and at most 55 seconds"),
        ({"budget_s": 56}, "budget must be more than 0 and at most 55 seconds"),
        # 30 days overflowed the run record's integer budget_ms column
        ({"budget_s": 30 * 86400}, "budget must be more than 0 and at most 55 seconds"),
        ({"lookahead_s": -1}, "lookahead must be 0 to 10 minutes"),
        ({"lookahead_s": 30 * 86400}, "lookahead must be 0 to 10 minutes"),
    ],
)
def test_tick_refuses_bad_arguments(conn, args, message):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        tick(conn, **args)
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.tick_runs").fetchone()["n"] == 0


# ------------------------------------------------------------------ concurrency


def test_two_concurrent_ticks_emit_every_slot_once_and_split_the_work(conn, db_url):
    for code in ("us-east-1", "eu-west-1", "ap-south-1"):
        add_region(conn, code, is_default=code == "us-east-1")
    n = 10_000
    # due up to 30 s ago, intervals >= 2 min: the next slot lies beyond the 60 s lookahead,
    # so each monitor has exactly one slot to emit
    conn.execute(
        """
        INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, next_check_at)
        SELECT 'https://example.com/' || g, 2 + g %% 30,
               (ARRAY['us-east-1', 'eu-west-1', NULL])[1 + g %% 3],
               now() - make_interval(secs => random() * 30)
          FROM generate_series(1, %s) g""",
        (n,),
    )
    follow_logged(conn)  # a bulk insert: the relay follows it when woken
    slots = {m: r["next_check_at"] for m, r in schedule_of(conn).items()}
    assert len(slots) == n
    before = product_rows(conn)

    start = threading.Barrier(2)
    runs: list[dict] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as own:
                # a tick that waited on the other's locks would fail here instead
                own.execute("SET lock_timeout = '100ms'")
                start.wait(timeout=30)
                runs.append(tick(own, chunk=50, trigger="concurrent"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    # while they run, watch for a backend waiting on a row lock (another transaction's
    # row or tuple lock); SKIP LOCKED means there is never one. (Committing a NOTIFY takes
    # a brief database-wide lock, an 'object' lock: that one is allowed.)
    row_lock_waits = []
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        row_lock_waits += conn.execute(
            "SELECT pid, wait_event, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND wait_event IN ('transactionid', 'tuple')"
        ).fetchall()
    for t in threads:
        t.join(timeout=10)
    assert not errors, errors
    assert row_lock_waits == []
    assert len(runs) == 2

    claimed = [r["monitors_claimed"] for r in runs]
    assert sum(claimed) == n
    assert all(c > 0 for c in claimed), f"one tick did all the work: {claimed}"
    assert sum(r["jobs_written"] for r in runs) == n
    assert all(r["finished_at"] is not None and not r["cut_short"] for r in runs)

    jobs = conn.execute("SELECT monitor_id, scheduled_for FROM pgpulse.outbox").fetchall()
    assert len(jobs) == n
    assert {j["monitor_id"]: j["scheduled_for"] for j in jobs} == slots
    # every claimed monitor was bumped exactly one interval past its slot, in pgpulse's
    # schedule; the product's rows were neither written nor locked
    assert (
        conn.execute("""
        SELECT count(*) AS n FROM public.monitors m
          JOIN pgpulse.schedule s ON s.monitor_id = m.id
          JOIN pgpulse.outbox o ON o.monitor_id = m.id
         WHERE s.next_check_at = o.scheduled_for + make_interval(mins => m.check_interval_minutes)
    """).fetchone()["n"]
        == n
    )
    assert product_rows(conn) == before


def test_tick_skips_monitors_locked_by_another_transaction_without_waiting(conn, db_url, region):
    """A product transaction changing monitors holds their schedule rows (its trigger follows
    the change into them) until it ends: the tick skips those instead of waiting. The
    product's own row locks are not the tick's business: it never reads or locks them."""
    add_monitors(conn, 40, check_interval_minutes=5, due="-10 seconds")
    ids = [r["id"] for r in conn.execute("SELECT id FROM public.monitors ORDER BY id")]
    changing, product_locked = ids[:10], ids[10:20]
    with psycopg.connect(db_url, row_factory=dict_row) as holder:
        holder.execute(
            "UPDATE public.monitors SET url = url || '?v=2' WHERE id = ANY(%s)", (changing,)
        )
        holder.execute(
            "SELECT 1 FROM public.monitors WHERE id = ANY(%s) FOR UPDATE", (product_locked,)
        )
        conn.execute("SET lock_timeout = '100ms'")
        run = tick(conn, chunk=7)
        assert (run["monitors_claimed"], run["stop_reason"]) == (30, "drained")
        claimed = {j["monitor_id"] for j in outbox(conn)}
        assert not claimed & set(changing)
        assert set(product_locked) <= claimed
        holder.rollback()
    # released: the next tick picks them up
    run = tick(conn, chunk=7)
    assert run["monitors_claimed"] == 10
    assert len(outbox(conn)) == 40


# ------------------------------------------------------------------ phase, drift, catch-up


def test_no_drift_over_many_ticks(conn, region):
    """Time passes (every next_check_at moves 37 s back between ticks, the same as the
    clock moving 37 s forward): each monitor's slots stay exactly one interval apart on the
    grid of its first slot, however late in its chunk or tick it was claimed."""
    conn.execute("""
        INSERT INTO public.monitors (url, check_interval_minutes, next_check_at)
        SELECT 'https://example.com/' || g, (ARRAY[1, 2, 3, 5, 7])[1 + g % 5],
               now() - make_interval(secs => random() * 54 * (ARRAY[1, 2, 3, 5, 7])[1 + g % 5])
          FROM generate_series(1, 150) g""")
    held = schedule_of(conn)
    first = {r["id"]: r | held[r["id"]] for r in conn.execute("SELECT * FROM public.monitors")}
    step = timedelta(seconds=37)
    shift = timedelta(0)
    slots: dict[uuid.UUID, list[datetime]] = {m: [] for m in first}
    for _ in range(30):
        # a tick re-claiming the same monitors over and over would run into its budget
        assert not tick(conn, chunk=40, budget_s=5)["cut_short"]
        # the relay drains the outbox; slots are kept in the simulated time
        for job in conn.execute(
            "DELETE FROM pgpulse.outbox RETURNING monitor_id, scheduled_for, deliver_at"
        ).fetchall():
            assert job["deliver_at"] == job["scheduled_for"]
            slots[job["monitor_id"]].append(job["scheduled_for"] + shift)
        conn.execute("UPDATE pgpulse.schedule SET next_check_at = next_check_at - %s", (step,))
        shift += step

    final = {m: r["next_check_at"] for m, r in schedule_of(conn).items()}
    for monitor_id, got in slots.items():
        interval = timedelta(minutes=first[monitor_id]["check_interval_minutes"])
        assert got[0] == first[monitor_id]["next_check_at"]
        expected = [got[0] + k * interval for k in range(len(got))]
        assert got == expected, f"monitor {monitor_id} drifted"
        # 30 ticks x 37 s = 18.5 simulated minutes, all of them scheduled
        assert got[-1] + interval > first[monitor_id]["next_check_at"] + shift
        assert final[monitor_id] + shift == got[-1] + interval


def test_one_catch_up_job_after_a_long_pause(conn, region):
    """A monitor last due hours ago gets one job (its latest missed slot on its phase grid),
    not one per missed slot, and its next check jumps to the next future slot."""
    cases = []
    for i, (interval, missed) in enumerate([(2, 90), (5, 40), (10, 25), (60, 5), (1440, 1)]):
        lag = timedelta(seconds=30 + i)  # the latest missed slot: 30..34 s ago
        cases.append((interval, missed, lag))
    now = conn.execute("SELECT now() AS now").fetchone()["now"]
    monitors = {}
    for interval, missed, lag in cases:
        next_at = now - missed * timedelta(minutes=interval) - lag
        m = conn.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, next_check_at) "
            "VALUES ('https://example.com/', %s, %s) RETURNING *",
            (interval, next_at),
        ).fetchone()
        monitors[m["id"]] = (m, interval, now - lag)

    run = tick(conn)

    assert (run["monitors_claimed"], run["jobs_written"]) == (len(cases), len(cases))
    jobs = outbox(conn)
    assert len(jobs) == len(cases)
    rows = schedule_of(conn)
    for job in jobs:
        m, interval, latest_missed = monitors[job["monitor_id"]]
        iv = timedelta(minutes=interval)
        assert job["scheduled_for"] == latest_missed
        assert job["deliver_at"] == latest_missed
        assert job["expires_at"] == latest_missed + iv
        assert job["expires_at"] > run["finished_at"], "the catch-up job must not be born expired"
        next_at = rows[m["id"]]["next_check_at"]
        assert next_at == latest_missed + iv
        assert next_at > run["finished_at"]
        assert (next_at - m["next_check_at"]) % iv == timedelta(0), "phase lost"


def test_lookahead_emits_jobs_due_within_the_window_with_deliver_at_in_the_future(conn, region):
    soon = add_monitors(conn, 1, check_interval_minutes=5, due="30 seconds")[0]
    later = add_monitors(conn, 1, check_interval_minutes=5, due="2 minutes")[0]
    run = tick(conn, lookahead_s=60)
    [job] = outbox(conn)
    assert job["monitor_id"] == soon["id"]
    assert job["scheduled_for"] == job["deliver_at"] == soon["next_check_at"]
    assert job["deliver_at"] > run["finished_at"]
    assert job["expires_at"] == soon["next_check_at"] + timedelta(minutes=5)
    assert schedule_of(conn)[later["id"]]["next_check_at"] == later["next_check_at"]
    # without lookahead the soon one would not have been due yet (pgpulse's clock moved:
    # a product's "check now" would write the job at once, after the tick above)
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() + interval '30 seconds'")
    assert tick(conn, lookahead_s=0)["monitors_claimed"] == 0
    assert outbox(conn) == []


def test_new_monitors_are_spread_over_their_interval_with_a_stable_phase(conn):
    conn.execute("""
        INSERT INTO public.monitors (url, check_interval_minutes)
        SELECT 'https://example.com/' || g, 1 FROM generate_series(1, 1200) g""")
    conn.execute("""
        INSERT INTO public.monitors (url, check_interval_minutes, next_check_at)
        SELECT 'https://example.com/' || g, 60, NULL FROM generate_series(1, 300) g""")
    follow_logged(conn)  # the first was a bulk insert: the relay follows it when woken
    # each monitor's first slot, as pgpulse scheduled it (the product's column stays NULL)
    conn.execute("""
        CREATE TEMP VIEW first_slots AS
        SELECT m.id, m.created_at, m.check_interval_minutes, s.next_check_at,
               m.next_check_at AS product_next_check_at
          FROM public.monitors m JOIN pgpulse.schedule s ON s.monitor_id = m.id""")
    assert conn.execute(
        "SELECT count(*) AS n, count(product_next_check_at) AS written FROM first_slots"
    ).fetchone() == {"n": 1500, "written": 0}
    spread = conn.execute("""
        SELECT count(DISTINCT date_trunc('second', next_check_at)) AS seconds,
               max(per_second) AS busiest,
               bool_and(next_check_at >= created_at
                        AND next_check_at < created_at + interval '1 minute') AS inside
          FROM first_slots
          JOIN (SELECT date_trunc('second', next_check_at) AS s, count(*) AS per_second
                  FROM first_slots WHERE check_interval_minutes = 1 GROUP BY 1) b
            ON b.s = date_trunc('second', next_check_at)
         WHERE check_interval_minutes = 1""").fetchone()
    # 1200 one-minute monitors over 60 seconds: ~20 per second, not all at once
    assert spread["inside"]
    assert spread["seconds"] >= 55, spread
    assert spread["busiest"] <= 60, spread
    hourly = conn.execute("""
        SELECT count(DISTINCT date_trunc('minute', next_check_at)) AS minutes,
               bool_and(next_check_at >= created_at
                        AND next_check_at < created_at + interval '1 hour') AS inside
          FROM first_slots WHERE check_interval_minutes = 60""").fetchone()
    assert hourly["inside"] and hourly["minutes"] >= 45, hourly

    # the phase comes from the id: the same grid whenever it is asked, and the first
    # next_check_at is on it
    bad = conn.execute("""
        SELECT m.id, m.next_check_at, t.at
          FROM first_slots m,
               LATERAL (VALUES (m.created_at), (m.created_at + interval '7 hours 13.5 seconds'),
                               (m.created_at - interval '3 days 1 second'),
                               (timestamptz '2031-05-17 04:33:12.345678+00')) t(at),
               LATERAL (SELECT pgpulse.next_slot(m.id, m.check_interval_minutes * 60, t.at) AS s,
                               make_interval(mins => m.check_interval_minutes) AS iv) f
         WHERE m.next_check_at <> pgpulse.next_slot(m.id, m.check_interval_minutes * 60, m.created_at)
            OR f.s < t.at OR f.s >= t.at + f.iv
            OR extract(epoch FROM f.s - m.next_check_at)::numeric
               % (m.check_interval_minutes * 60) <> 0
            -- a slot is its own first slot; a microsecond later the next one is
            OR pgpulse.next_slot(m.id, m.check_interval_minutes * 60, f.s) <> f.s
            OR pgpulse.next_slot(m.id, m.check_interval_minutes * 60,
                                 f.s + interval '1 microsecond')
               <> f.s + f.iv
         LIMIT 5""").fetchall()
    assert bad == []


def test_phase_differs_between_monitors_and_fits_every_interval(conn):
    rows = conn.execute("""
        SELECT iv, count(DISTINCT p) AS phases, min(p) AS lo, max(p) AS hi
          FROM (SELECT iv, pgpulse._slot_phase(gen_random_uuid()::text, iv * 60) AS p
                  FROM generate_series(1, 2000) g, (VALUES (1), (7), (1440)) v(iv)) x
         GROUP BY iv ORDER BY iv""").fetchall()
    for r in rows:
        assert r["lo"] >= 0 and r["hi"] < r["iv"] * 60, r
        assert r["phases"] >= 1900, r  # millisecond phases: almost never equal


# ------------------------------------------------------------------ budget, record, NOTIFY


@pytest.mark.slow  # seconds of real time: outside make check's lane
def test_budget_cuts_a_tick_short_and_the_next_tick_finishes(conn, region):
    # 4000 chunks of 5 take far longer than 0.3 s on any machine
    n = 20_000
    add_monitors(conn, n, check_interval_minutes=5, due="-30 seconds")

    short = tick(conn, budget_s=0.3, chunk=5)

    assert (short["stop_reason"], short["cut_short"]) == ("budget", True)
    # it stopped at its budget: the run record's own clock, plus a bounded overshoot (the
    # chunk under way finishes; a shared, noisy machine: generous)
    took = (short["finished_at"] - short["started_at"]).total_seconds()
    assert took < 0.3 + 1.5, f"a 0.3 s budget, the tick took {took:.2f} s"
    assert 0 < short["monitors_claimed"] < n
    assert short["jobs_written"] == short["monitors_claimed"]
    assert short["chunks"] == -(-short["monitors_claimed"] // 5)
    left = conn.execute(
        "SELECT count(*) AS n FROM pgpulse.schedule WHERE next_check_at <= now()"
    ).fetchone()["n"]
    assert left == n - short["monitors_claimed"]

    rest = tick(conn)
    assert rest["cut_short"] is False, rest
    assert rest["monitors_claimed"] == left
    assert (
        conn.execute("SELECT count(DISTINCT monitor_id) AS n FROM pgpulse.outbox").fetchone()["n"]
        == n
    )
    assert len(outbox(conn)) == n


def test_every_tick_writes_its_run_record(conn, region):
    add_monitors(conn, 25, check_interval_minutes=5)
    before = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    run = tick(conn, budget_s=12.5, lookahead_s=30, chunk=10, trigger="unit-test")
    after = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    assert run["trigger"] == "unit-test"
    assert before <= run["started_at"] <= run["finished_at"] <= after
    assert (run["budget_ms"], run["lookahead_ms"]) == (12500, 30000)
    assert (run["monitors_claimed"], run["jobs_written"], run["chunks"]) == (25, 25, 3)
    assert (run["cut_short"], run["unrouted"]) == (False, 0)
    empty = tick(conn)
    assert (empty["monitors_claimed"], empty["jobs_written"], empty["chunks"]) == (0, 0, 0)
    assert empty["finished_at"] is not None
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.tick_runs").fetchone()["n"] == 2


def _notifications_until_marker(listener: psycopg.Connection, marker: str) -> list[str]:
    """Payloads on pgpulse_outbox up to our own marker NOTIFY (sent after the tick, so
    delivered after anything the tick sent)."""
    payloads = []
    for note in listener.notifies(timeout=30):
        if note.channel == "pgpulse_test_marker" and note.payload == marker:
            return payloads
        payloads.append(note.payload)
    raise AssertionError("the marker notification never arrived")


def test_tick_notifies_the_relay_when_it_writes_jobs(conn, db_url, region):
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN pgpulse_outbox")
        listener.execute("LISTEN pgpulse_test_marker")

        # nothing due: no notification (no lookahead: monitors added next are left to the
        # tick below instead of being written ahead at once, see test_first_check)
        tick(conn, lookahead_s=0)
        conn.execute("NOTIFY pgpulse_test_marker, 'empty'")
        assert _notifications_until_marker(listener, "empty") == []

        add_monitors(conn, 12, check_interval_minutes=5)
        tick(conn, chunk=5)
        conn.execute("NOTIFY pgpulse_test_marker, 'jobs'")
        payloads = _notifications_until_marker(listener, "jobs")
        assert sorted(payloads) == ["2", "5", "5"]
