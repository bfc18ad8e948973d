"""Rows the suites start from: regions, monitors, outbox jobs (from the real tick or inserted
directly), and reading them back. `conn`: an autocommit connection with dict rows."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from relay.queries import queries
from relay.schedule.tick import TickParams
from tests.support.regions import REGIONS


def connect(db_url: str) -> psycopg.Connection:
    return psycopg.connect(db_url, autocommit=True, row_factory=dict_row)


def insert_row(conn, table: str, **cols) -> dict:
    """One row of `table` with the columns given; returns it as stored."""
    return conn.execute(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
        "RETURNING *",
        list(cols.values()),
    ).fetchone()


# ------------------------------------------------------------------ regions


def add_region(conn, code: str, **cols) -> dict:
    return insert_row(conn, "pgpulse.regions", code=code, **cols)


def add_regions(conn, default: str, fallbacks: dict[str, str | None]) -> None:
    """The default region, then each other region with its fallback (None: none), in order."""
    add_region(conn, default, is_default=True)
    for code, fallback in fallbacks.items():
        add_region(conn, code, fallback_region=fallback)


def region_row(conn, code: str) -> dict:
    return conn.execute("SELECT * FROM pgpulse.regions WHERE code = %s", (code,)).fetchone()


# ------------------------------------------------------------------ monitors


def add_monitors(
    conn, n: int = 1, *, due: str | datetime | None = "-10 seconds", **cols
) -> list[dict]:
    """n monitors https://example.com/1..n, the other columns as given (the same for all);
    their next check at now() + due (an interval), at due (a time), or the column's default
    (None). Returns them as stored."""
    names, values = ["url", *cols], [*cols.values()]
    selected = ["'https://example.com/' || g", *["%s"] * len(cols)]
    if due is not None:
        names.append("next_check_at")
        selected.append("%s::timestamptz" if isinstance(due, datetime) else "now() + %s::interval")
        values.append(due)
    rows = conn.execute(
        f"INSERT INTO public.monitors ({', '.join(names)}) SELECT {', '.join(selected)} "
        "FROM generate_series(1, %s) g RETURNING *",
        [*values, n],
    ).fetchall()
    follow_logged(conn)
    held = schedule_of(conn, [r["id"] for r in rows])
    return [r | held[r["id"]] for r in rows]


# what pgpulse's schedule holds for a monitor, as add_monitors returns it beside its columns
SCHEDULED = ("next_check_at", "last_scheduled_at", "check_interval_seconds", "check_spec", "parked")


def schedule_of(conn, ids: list | None = None) -> dict:
    """pgpulse's schedule rows by monitor id (all, or these ids): next_check_at,
    last_scheduled_at, check_interval_seconds, check_spec, parked."""
    rows = conn.execute(
        f"SELECT monitor_id, {', '.join(SCHEDULED)} FROM pgpulse.schedule"
        " WHERE %(ids)s::text[] IS NULL OR monitor_id::text = ANY (%(ids)s::text[])",
        {"ids": None if ids is None else [str(i) for i in ids]},
    ).fetchall()
    return {r["monitor_id"]: {k: r[k] for k in SCHEDULED} for r in rows}


def add_monitor(conn, **kwargs) -> dict:
    """One monitor, as add_monitors."""
    return add_monitors(conn, 1, **kwargs)[0]


def insert_monitors(
    conn,
    n: int,
    *,
    region: str | None = "spread",
    allow_fallback: bool = True,
    due_ago_s: float = 1.0,
) -> None:
    """n active monitors due `due_ago_s` ago with varied checks; region 'spread' gives a
    quarter of them no preferred region (round-robin) and spreads the rest over REGIONS."""
    codes = [r.code for r in REGIONS]
    conn.execute(
        """
        INSERT INTO public.monitors (url, method, timeout_ms, expected_status, check_retries,
                                     check_retry_delay_ms, check_interval_minutes,
                                     preferred_region, allow_fallback, criticality, next_check_at)
        SELECT 'https://example-' || g || '.test/health?probe=' || g,
               (ARRAY['GET', 'HEAD', 'POST'])[1 + g %% 3],
               1000 + (g %% 50) * 100,
               CASE WHEN g %% 7 = 0 THEN ARRAY[200, 204] ELSE ARRAY[200] END,
               g %% 4, (g %% 5) * 500,
               (ARRAY[1, 5, 15, 60])[1 + g %% 4],
               CASE WHEN %(region)s::text = 'spread'
                    THEN (ARRAY[NULL, %(r0)s, %(r1)s, %(r2)s])[1 + g %% 4]
                    ELSE %(region)s::text END,
               %(allow_fallback)s,
               (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
               now() - make_interval(secs => %(ago)s)
          FROM generate_series(1, %(n)s) g
    """,
        {
            "n": n,
            "region": region,
            "r0": codes[0],
            "r1": codes[1],
            "r2": codes[2],
            "allow_fallback": allow_fallback,
            "ago": due_ago_s,
        },
    )
    follow_logged(conn)


def follow_logged(conn, timeout: float = 30) -> int:
    """Follows what bulk inserts (over 500 rows a statement) logged, as the relay does when
    woken and as every tick does first, until nothing is left (running relays may be
    following some of it at the same time: their rows are skipped, then waited for);
    returns the rows this call followed."""
    followed, deadline = 0, time.monotonic() + timeout
    while True:
        followed += conn.execute("SELECT pgpulse.follow_apply(1000000) AS n").fetchone()["n"]
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM pgpulse.follow_log) AS e").fetchone()[
            "e"
        ]:
            return followed
        if time.monotonic() > deadline:
            raise AssertionError(f"logged product rows not followed within {timeout:g} s")
        time.sleep(0.05)


# ------------------------------------------------------------------ jobs


def tick(conn, *, trigger: str = "test", **params) -> dict:
    """Runs one real tick and returns its tick_runs row; params are TickParams fields
    (budget_s, lookahead_s, chunk), the rest as `pgpulse tick` has them."""
    run_id = conn.execute(
        queries()["tick"], {"trigger": trigger, **asdict(TickParams(**params))}
    ).fetchone()["run_id"]
    return conn.execute("SELECT * FROM pgpulse.tick_runs WHERE id = %s", (run_id,)).fetchone()


def insert_jobs(
    conn,
    n: int,
    region: str,
    *,
    deliver_in_s: float = 0.0,
    expires_in_s: float = 300.0,
    allow_fallback: bool = True,
    criticality: str = "normal",
    tag: str = "job",
    notify: bool = False,
) -> list[str]:
    """n outbox rows inserted directly (exact control over timing and routing), with the
    payload the tick writes; returns their job ids."""
    rows = conn.execute(
        """
        INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                    deliver_at, expires_at, allow_fallback, payload)
        SELECT md5(%(tag)s || '/' || %(region)s || '/' || g)::uuid,
               md5('monitor/' || %(tag)s || '/' || g)::uuid,
               %(region)s, %(criticality)s,
               now() + make_interval(secs => %(deliver)s),
               now() + make_interval(secs => %(deliver)s),
               now() + make_interval(secs => %(expires)s),
               %(allow_fallback)s,
               jsonb_build_object('url', 'https://' || %(tag)s || '-' || g || '.test/',
                                  'method', 'GET', 'timeout_ms', 5000,
                                  'expected_status', jsonb_build_array(200),
                                  'retry', jsonb_build_object('max_attempts', 2, 'delay_ms', 1000))
          FROM generate_series(1, %(n)s) g
        RETURNING job_id::text
    """,
        {
            "n": n,
            "region": region,
            "deliver": deliver_in_s,
            "expires": expires_in_s,
            "allow_fallback": allow_fallback,
            "criticality": criticality,
            "tag": tag,
        },
    ).fetchall()
    if notify:
        conn.execute("NOTIFY pgpulse_outbox")
    return [r["job_id"] for r in rows]


def record_emitted(conn) -> None:
    """Keeps every job id ever written to the outbox in test_emitted (the relays may
    publish and delete rows before the test could read them)."""
    conn.execute("""
        CREATE TABLE public.test_emitted (job_id uuid NOT NULL);
        -- SECURITY DEFINER: the tick writes the outbox as pgpulse_owner, which may not
        -- write this test's table
        CREATE FUNCTION public.test_record_emitted() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            INSERT INTO public.test_emitted SELECT job_id FROM new_rows;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_record_emitted AFTER INSERT ON pgpulse.outbox
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION public.test_record_emitted();
    """)


def emitted_ids(conn) -> list[str]:
    return [r["job_id"] for r in conn.execute("SELECT job_id::text FROM public.test_emitted")]


def outbox_ids(conn) -> set[str]:
    return {r["job_id"] for r in conn.execute("SELECT job_id::text FROM pgpulse.outbox")}


def outbox_count(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"]


def outbox_jobs(conn, monitor_id=None) -> list[dict]:
    """The outbox rows (of one monitor, or all) by slot and region."""
    return conn.execute(
        "SELECT * FROM pgpulse.outbox WHERE %(m)s::uuid IS NULL OR monitor_id = %(m)s "
        "ORDER BY scheduled_for, region",
        {"m": monitor_id},
    ).fetchall()
