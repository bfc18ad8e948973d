"""The tick inside a product's database, tried the way an attacker or a messy product
database would: planted operators (search_path hijack), rows that break the arithmetic,
locks held by other sessions, edits to monitors while their jobs wait."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.dsn import as_user
from tests.support.hijacks import hijack_calls, plant_hijacks
from tests.support.seeding import add_monitors, outbox_jobs, schedule_of, tick

# ------------------------------------------------------------------ 1. search_path


def test_planted_operators_never_run_in_the_tick_as_pg_cron_runs_it(
    cron_db_url, attacker_in_cron_db
):
    with psycopg.connect(attacker_in_cron_db, autocommit=True) as mallory:
        plant_hijacks(mallory)
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as admin:
        job = admin.execute(
            "SELECT command, database, username FROM cron.job WHERE jobname = 'pgpulse-tick'"
        ).fetchone()
        # due monitors, new ones too (their phase comes from a trigger function)
        admin.execute("INSERT INTO pgpulse.regions (code) VALUES ('hijack-1')")
        admin.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, "
            # g::text: a planted || (text, integer) would run in this test's own SQL
            "next_check_at) SELECT 'https://example.com/h' || g::text, 1 + g, 'hijack-1', "
            "now() - make_interval(days => g) FROM generate_series(1, 20) g"
        )
        admin.execute(
            "INSERT INTO public.monitors (url, preferred_region) "
            "VALUES ('https://example.com/new', 'hijack-1')"
        )
    # the job runs as a role without superuser rights, not as the migration's owner
    assert job["username"] == "pgpulse_ticker"
    with psycopg.connect(cron_db_url, autocommit=True) as admin:
        assert admin.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (job["username"],)
        ).fetchone() == (False,)
    try:
        # exactly as pg_cron runs it: that role, that database, its default search_path
        with psycopg.connect(
            as_user(cron_db_url, job["username"]).rsplit("/", 1)[0] + "/" + job["database"],
            autocommit=True,
        ) as ticker:
            assert ticker.execute("SHOW search_path").fetchone()[0] == '"$user", public'
            ticker.execute(job["command"])
        with psycopg.connect(cron_db_url, autocommit=True) as admin:
            assert hijack_calls(admin) == []
            # the 20 due ones (the new one's first slot may fall inside the lookahead too)
            scheduled = admin.execute(
                "SELECT count(*) FROM pgpulse.outbox o JOIN public.monitors m ON m.id = o.monitor_id"
                " WHERE o.region = 'hijack-1' AND m.url LIKE 'https://example.com/h%'"
            ).fetchone()[0]
            assert scheduled == 20
    finally:
        with psycopg.connect(cron_db_url, autocommit=True) as admin:
            admin.execute("DELETE FROM public.monitors WHERE preferred_region = 'hijack-1'")
            admin.execute("DELETE FROM pgpulse.outbox WHERE region = 'hijack-1'")
            admin.execute("DELETE FROM pgpulse.regions WHERE code = 'hijack-1'")


def test_no_pgpulse_function_resolves_names_through_the_callers_search_path(conn):
    # plpgsql functions pin it; SQL functions have SQL-standard bodies (bound when created)
    loose = conn.execute("""
        SELECT p.oid::regprocedure::text AS f
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'pgpulse' AND p.prokind = 'f'
           AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
           AND NOT (l.lanname = 'sql' AND p.prosqlbody IS NOT NULL)
    """).fetchall()
    assert loose == []
    # the procedure commits, so it cannot pin it: it computes nothing itself, only calls
    # pgpulse.* (a planted operator could otherwise match one of its expressions)
    body = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = "
        "'pgpulse.tick(bigint, text, interval, interval, integer)'::regprocedure"
    ).fetchone()["prosrc"]
    for operator in ("+", "-", "*", "/", "%", "<", ">", "=", "||"):
        assert operator not in body.replace("=>", "").replace(":=", "").replace("--", ""), operator


# ------------------------------------------------------------------ 2. bad rows


@pytest.mark.parametrize("value", ["-infinity", "infinity"])
def test_a_non_finite_next_check_at_is_taken_and_never_becomes_a_slot(conn, value):
    """The product's write succeeds (pgpulse constrains nothing there); pgpulse's schedule
    never holds the value: a new row starts on its phase grid, an update is no "check now"."""
    [new] = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_minutes, next_check_at) "
        "VALUES ('https://example.com/', 5, %s) RETURNING id, now() AS at",
        (value,),
    ).fetchall()
    held = schedule_of(conn)[new["id"]]
    assert held["parked"] is None
    assert (
        held["next_check_at"]
        == conn.execute(
            "SELECT pgpulse.next_slot(%s, 300, %s) AS s", (new["id"], new["at"])
        ).fetchone()["s"]
    )
    [m] = add_monitors(conn, 1, check_interval_minutes=5)
    conn.execute("UPDATE public.monitors SET next_check_at = %s WHERE id = %s", (value, m["id"]))
    assert conn.execute(
        "SELECT NOT isfinite(next_check_at) AS kept FROM public.monitors WHERE id = %s",
        (m["id"],),
    ).fetchone()["kept"]
    held = schedule_of(conn)[m["id"]]
    assert (held["next_check_at"], held["parked"]) == (m["next_check_at"], None)


def test_far_past_rows_restart_on_their_phase_grid(conn, region):
    """Dates so far back that the catch-up arithmetic overflowed (the product's, taken as
    the first slot, or pgpulse's own schedule moved back): each gets one job on its phase
    grid, and the monitors behind them in the same chunk are scheduled too. (A product's
    -infinity never reaches the schedule, which refuses it: see the test above.)"""
    odd = {
        conn.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, next_check_at) "
            "VALUES ('https://example.com/odd', %s, %s) RETURNING id",
            (iv, at),
        ).fetchone()["id"]: iv
        for iv, at in [
            (1, "4713-01-01 00:00:00+00 BC"),
            (7, "0001-01-01 00:00:00+00"),
            (60, "1990-01-01 00:00:00+00"),
        ]
    }
    [moved] = add_monitors(conn, 1, check_interval_minutes=1, due="1 hour")
    with pytest.raises(psycopg.errors.CheckViolation, match="schedule_next_check_at_finite"):
        conn.execute(
            "UPDATE pgpulse.schedule SET next_check_at = '-infinity' WHERE monitor_id = %s",
            (moved["id"],),
        )
    conn.execute(
        "UPDATE pgpulse.schedule SET next_check_at = '4713-01-01 00:00:00+00 BC' "
        "WHERE monitor_id = %s",
        (moved["id"],),
    )
    odd[moved["id"]] = 1
    normal = add_monitors(conn, 50, check_interval_minutes=5)

    run = tick(conn, lookahead_s=0)  # one slot each: the latest one not after now

    assert (run["monitors_claimed"], run["skipped"], run["stop_reason"]) == (54, 0, "drained")
    jobs = {j["monitor_id"]: j for j in conn.execute("SELECT * FROM pgpulse.outbox").fetchall()}
    assert set(jobs) == {m["id"] for m in normal} | set(odd)
    for monitor_id, iv in odd.items():
        job = jobs[monitor_id]
        grid = conn.execute(
            "SELECT pgpulse.next_slot(%s, %s, %s) AS s", (monitor_id, iv * 60, job["scheduled_for"])
        ).fetchone()["s"]
        assert grid == job["scheduled_for"], "not on the monitor's phase grid"
        assert (
            run["started_at"] - timedelta(minutes=iv) <= job["scheduled_for"] <= run["finished_at"]
        )
        assert job["expires_at"] == job["scheduled_for"] + timedelta(minutes=iv)


def test_a_row_that_cannot_be_scheduled_is_skipped_and_recorded_and_the_rest_go_out(conn, region):
    """Whatever one monitor's row holds, every other due monitor is scheduled and the tick
    says what it skipped. A product row pgpulse cannot schedule (an interval of 0) is parked
    with its reason when written, so the tick never claims it; a schedule row the tick
    cannot compute (an interval of 0 written into pgpulse.schedule by hand) is skipped."""
    monitors = add_monitors(conn, 300, check_interval_minutes=5)
    parked, broken = monitors[0]["id"], monitors[1]["id"]
    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 0, "
        "next_check_at = now() - interval '1 hour' WHERE id = %s",
        (parked,),
    )
    assert schedule_of(conn, [parked])[parked]["parked"] == "interval: 0 s is not 10 s to 1 day"
    conn.execute(
        "UPDATE pgpulse.schedule SET check_interval_seconds = 0, "
        "next_check_at = now() - interval '1 hour' WHERE monitor_id = %s",
        (broken,),
    )

    run = tick(conn, chunk=100)

    assert run["skipped"] == 1
    assert run["monitors_claimed"] == 298
    assert run["stop_reason"] == "drained" and run["finished_at"] is not None
    assert run["skip_detail"].startswith(f"monitor {broken}: ")
    assert "division by zero" in run["skip_detail"]
    jobs = {
        j["monitor_id"] for j in conn.execute("SELECT monitor_id FROM pgpulse.outbox").fetchall()
    }
    assert jobs == {m["id"] for m in monitors} - {parked, broken}
    # the next tick skips the broken one again, and nothing else is due
    again = tick(conn, chunk=100)
    assert (again["skipped"], again["monitors_claimed"], again["stop_reason"]) == (1, 0, "drained")


def test_a_product_trigger_on_monitors_never_affects_the_tick(conn, region):
    """The product's own triggers on its table (one that refuses every change, one that
    writes an audit table pgpulse has no rights on) never run in a tick: it writes no
    product row, so every due monitor is scheduled, none skipped."""
    monitors = add_monitors(conn, 300, check_interval_minutes=5)
    conn.execute("""
        CREATE TABLE public.product_audit (id uuid, at timestamptz DEFAULT now());
        REVOKE ALL ON public.product_audit FROM PUBLIC;
        CREATE FUNCTION public.product_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.product_audit (id) VALUES (NEW.id);
            RETURN NULL;
        END $$;
        CREATE TRIGGER product_audit AFTER UPDATE ON public.monitors
            FOR EACH ROW EXECUTE FUNCTION public.product_audit();""")
    # pgpulse's role (the tick's steps run as it) may not write it
    conn.execute("SET ROLE pgpulse_owner")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO public.product_audit (id) VALUES (gen_random_uuid())")
    finally:
        conn.execute("RESET ROLE")
    conn.execute("""
        CREATE FUNCTION public.product_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'product says no';
        END $$;
        CREATE TRIGGER product_guard_row BEFORE UPDATE OR DELETE ON public.monitors
            FOR EACH ROW EXECUTE FUNCTION public.product_guard();
        CREATE TRIGGER product_guard_statement AFTER UPDATE ON public.monitors
            FOR EACH STATEMENT EXECUTE FUNCTION public.product_guard();""")
    before = {
        r["id"]: (r["xmin"], r["ctid"])
        for r in conn.execute("SELECT id, xmin::text, ctid::text FROM public.monitors")
    }

    run = tick(conn, chunk=100)

    assert (run["monitors_claimed"], run["jobs_written"], run["skipped"]) == (300, 300, 0)
    assert (run["stop_reason"], run["skip_detail"]) == ("drained", None)
    assert {j["monitor_id"] for j in outbox_jobs(conn)} == {m["id"] for m in monitors}
    after = {
        r["id"]: (r["xmin"], r["ctid"])
        for r in conn.execute("SELECT id, xmin::text, ctid::text FROM public.monitors")
    }
    assert after == before
    assert conn.execute("SELECT count(*) AS n FROM public.product_audit").fetchone()["n"] == 0
    # the product's guard is armed: it refuses the product's own change
    with pytest.raises(psycopg.errors.RaiseException, match="product says no"):
        conn.execute("UPDATE public.monitors SET url = url || '?v=2'")


# ------------------------------------------------------------------ 4. the budget is hard


@pytest.mark.slow  # seconds of real time: outside make check's lane
@pytest.mark.parametrize(
    ("holder_sql", "stop_reason"),
    [
        ("LOCK TABLE pgpulse.schedule IN ACCESS EXCLUSIVE MODE", "lock_timeout"),
        # a non-concurrent index build
        (
            "CREATE INDEX schedule_url_idx ON pgpulse.schedule ((check_spec ->> 'url'))",
            "lock_timeout",
        ),
        # the product's table: the tick never reads or locks it, so it does not wait at all
        ("LOCK TABLE public.monitors IN ACCESS EXCLUSIVE MODE", "drained"),
        ("CREATE INDEX monitors_url_idx ON public.monitors (url)", "drained"),
    ],
)
def test_a_lock_held_elsewhere_cannot_keep_the_tick_past_its_budget(
    conn, db_url, region, holder_sql, stop_reason
):
    add_monitors(conn, 2000, check_interval_minutes=5)
    budget_s = 2.0
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(db_url) as holder:
            holder.execute(holder_sql)
            held.set()
            release.wait(30)  # the tick of old ended only when the lock went
            holder.rollback()

    holder_thread = threading.Thread(target=hold)
    holder_thread.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        run = tick(conn, budget_s=budget_s)
        took = time.monotonic() - started
    finally:
        release.set()
        holder_thread.join(30)
    # the budget plus a small bounded overshoot (a shared, noisy machine: generous)
    assert took < budget_s + 5, f"tick took {took:.2f} s with a {budget_s} s budget"
    assert run["finished_at"] is not None
    assert (run["finished_at"] - run["started_at"]).total_seconds() < budget_s + 5
    if stop_reason == "drained":
        assert (run["stop_reason"], run["cut_short"], run["monitors_claimed"]) == (
            "drained",
            False,
            2000,
        )
        return
    assert (run["stop_reason"], run["cut_short"]) == ("lock_timeout", True)
    # the lock gone, the next tick does the work
    assert tick(conn)["monitors_claimed"] == 2000


# ------------------------------------------------------------------ 3. edits reach the schedule


def test_a_shorter_interval_rephases_at_once(conn, region):
    [daily] = add_monitors(
        conn, 1, check_interval_minutes=1440, due="20 hours"
    )  # next check in 20 h
    before = conn.execute("SELECT now() AS t").fetchone()["t"]
    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 1 WHERE id = %s", (daily["id"],)
    )
    row = conn.execute(
        "SELECT next_check_at, pgpulse.next_slot(monitor_id, 60, next_check_at) AS grid "
        "FROM pgpulse.schedule WHERE monitor_id = %s",
        (daily["id"],),
    ).fetchone()
    assert before <= row["next_check_at"] < before + timedelta(minutes=1)
    assert row["grid"] == row["next_check_at"]  # on the new interval's phase grid
    # longer: never later than one new interval from now
    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 60 WHERE id = %s", (daily["id"],)
    )
    at = schedule_of(conn)[daily["id"]]["next_check_at"]
    assert before <= at < before + timedelta(minutes=61)
    # an explicit next_check_at in the same UPDATE wins
    conn.execute(
        "UPDATE public.monitors SET check_interval_minutes = 5, "
        "next_check_at = '2031-01-01 00:00:00+00' WHERE id = %s",
        (daily["id"],),
    )
    assert (
        conn.execute(
            "SELECT extract(year FROM next_check_at) AS y FROM pgpulse.schedule "
            "WHERE monitor_id = %s",
            (daily["id"],),
        ).fetchone()["y"]
        == 2031
    )


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE public.monitors SET is_active = false WHERE id = %s",
        "DELETE FROM public.monitors WHERE id = %s",
    ],
)
def test_deactivated_or_deleted_monitor_jobs_stop(conn, region, edit):
    monitors = add_monitors(conn, 5, check_interval_minutes=5)
    tick(conn)
    gone = monitors[2]["id"]
    assert len(outbox_jobs(conn, gone)) == 1
    conn.execute(edit, (gone,))
    assert outbox_jobs(conn, gone) == []
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 4


def test_a_changed_check_reaches_waiting_jobs(conn, region):
    [m] = add_monitors(conn, 1, check_interval_minutes=5)
    tick(conn)
    conn.execute(
        "UPDATE public.monitors SET url = 'https://new.example/health', method = 'HEAD', "
        "timeout_ms = 3000, expected_status = '{204}', criticality = 'critical' "
        "WHERE id = %s",
        (m["id"],),
    )
    [job] = outbox_jobs(conn, m["id"])
    assert job["payload"]["url"] == "https://new.example/health"
    assert (
        job["payload"]["method"],
        job["payload"]["timeout_ms"],
        job["payload"]["expected_status"],
    ) == ("HEAD", 3000, [204])
    assert job["criticality"] == "critical"


def test_a_job_put_back_after_a_failure_follows_its_monitor(conn, region):
    """The relay's requeue and a dead letter's retry may bring back a job whose monitor
    changed (or went) while the job was in flight."""
    from relay.queries import queries

    kept, changed, paused = (m["id"] for m in add_monitors(conn, 3, check_interval_minutes=5))
    tick(conn)
    in_flight = {
        j["monitor_id"]: j
        for j in conn.execute("DELETE FROM pgpulse.outbox RETURNING *").fetchall()
    }  # the relay claimed them
    conn.execute(
        "UPDATE public.monitors SET url = 'https://moved.example/' WHERE id = %s", (changed,)
    )
    conn.execute("UPDATE public.monitors SET is_active = false WHERE id = %s", (paused,))
    for job in in_flight.values():  # ... and their publish failed
        conn.execute(
            queries()["requeue"],
            {
                "job_id": job["job_id"],
                "monitor_id": job["monitor_id"],
                "region": job["region"],
                "criticality": job["criticality"],
                "scheduled_for_s": job["scheduled_for"].timestamp(),
                "backoff_s": 1,
                "expires_at_s": job["expires_at"].timestamp(),
                "allow_fallback": job["allow_fallback"],
                "payload": psycopg.types.json.Jsonb(job["payload"]),
                "job_json": None,
                "attempts": 1,
                "error": "HTTP 503",
            },
        )
    back = {j["monitor_id"]: j for j in conn.execute("SELECT * FROM pgpulse.outbox").fetchall()}
    assert set(back) == {kept, changed}
    assert back[changed]["payload"]["url"] == "https://moved.example/"
    assert back[kept]["payload"] == in_flight[kept]["payload"]

    # dead letters: a deleted monitor's go with it; a deactivated one's is not retried; a
    # changed one's retry carries the change
    conn.execute("DELETE FROM pgpulse.outbox")
    for job in in_flight.values():
        conn.execute(
            "INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality, "
            "scheduled_for, deliver_at, expires_at, payload, attempts, last_error) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 5, 'gave up')",
            (
                job["job_id"],
                job["monitor_id"],
                job["region"],
                job["criticality"],
                job["scheduled_for"],
                job["deliver_at"],
                job["expires_at"],
                psycopg.types.json.Jsonb(job["payload"]),
            ),
        )
    conn.execute("DELETE FROM public.monitors WHERE id = %s", (kept,))
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"] == 2
    retried = conn.execute(queries()["dlq_retry"], {"job_id": None}).fetchone()["retried"]
    assert retried == 1
    [job] = conn.execute("SELECT * FROM pgpulse.outbox").fetchall()
    assert (job["monitor_id"], job["payload"]["url"]) == (changed, "https://moved.example/")


# ------------------------------------------------------------------ 11. bounded growth


def test_a_tick_prunes_old_run_records_and_dead_letters_without_pg_cron(conn, db_url, region):
    [m] = add_monitors(conn, 1, check_interval_minutes=5)
    conn.execute(
        "INSERT INTO pgpulse.tick_runs (trigger, started_at, budget_ms, lookahead_ms) "
        "SELECT 'old', now() - make_interval(days => d), 1, 1 FROM unnest('{28,29,31,32}'::int[]) d"
    )
    conn.execute(
        "INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality, "
        "scheduled_for, deliver_at, expires_at, payload, attempts, last_error, failed_at) "
        "SELECT gen_random_uuid(), %s, 'us-east-1', 'normal', now(), now(), now(), '{}', 5, "
        "'gave up', now() - make_interval(days => d) FROM unnest('{12,13,15,16}'::int[]) d",
        (m["id"],),
    )

    tick(conn)

    assert (
        conn.execute(
            "SELECT count(*) AS n FROM pgpulse.tick_runs WHERE trigger = 'old'"
        ).fetchone()["n"]
        == 2
    )  # 28 and 29 days kept
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"] == 2
    # the retention is a database setting
    conn.execute(
        f"ALTER DATABASE {db_url.rsplit('/', 1)[1]} SET pgpulse.dead_letter_retention = '1 day'"
    )
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as fresh:
        tick(fresh)
        assert fresh.execute("SELECT count(*) AS n FROM pgpulse.dead_letters").fetchone()["n"] == 0
