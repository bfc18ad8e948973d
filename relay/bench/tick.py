"""Benchmark of one scheduler tick over N due monitors, next to the raw write it must do.

Runs on its own throwaway PostgreSQL with durable settings (fsync on), so the figure is
what a real server pays: every chunk commits and flushes WAL.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay import migrate
from relay.db import one
from relay.local.embedded import EmbeddedPostgres
from relay.schedule.tick import TickParams

DATABASE = "pgpulse_bench"

# Three regions: monitors prefer one of them, or none (round-robin).
_SEED_REGIONS = """
INSERT INTO pgpulse.regions (code, is_default, weight) VALUES
    ('us-east-1', true, 2), ('eu-west-1', false, 1), ('ap-south-1', false, 1)
"""

# Intervals of 2..60 minutes and a slot 0..30 s ago: each monitor is due for exactly one
# slot, and its next one lies beyond the tick's 70 s lookahead.
_SEED_MONITORS = """
INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, criticality,
                             next_check_at)
SELECT 'https://example.com/health/' || g,
       2 + g %% 59,
       (ARRAY['us-east-1', 'eu-west-1', 'ap-south-1', NULL])[1 + g %% 4],
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
       now() - make_interval(secs => (g %% 30000) / 1000.0)
  FROM generate_series(1, %(n)s) g
"""

# The realistic mix: a tenth of the monitors every 10-30 s (several jobs per tick), another
# tenth checked from all three regions at once (three jobs per slot).
_SEED_MIX = """
UPDATE public.monitors m
   SET check_interval_seconds = CASE WHEN g % 10 = 0
                                     THEN (ARRAY[10, 15, 20, 30])[1 + (g / 10) % 4]
                                     ELSE m.check_interval_seconds END,
       check_regions = CASE WHEN g % 10 = 1
                            THEN ARRAY['us-east-1', 'eu-west-1', 'ap-south-1'] END
  FROM (SELECT id, split_part(url, '/', 5)::integer AS g FROM public.monitors) n
 WHERE n.id = m.id AND n.g % 10 IN (0, 1)
"""

# pgpulse's clock, moved back (the product's next_check_at is not pgpulse's: changing it
# would be a "check now" that writes the jobs at once, in that UPDATE)
_RESET_MONITORS = """
UPDATE pgpulse.schedule
   SET next_check_at = now() - make_interval(secs => random() * 30), last_scheduled_at = NULL
"""

# The reference: the same N rows (ids, routing columns, jsonb payload) written by one
# INSERT ... SELECT into a copy of the outbox, without claiming, routing or bumping.
_RAW_INSERT = """
INSERT INTO bench_outbox_copy
       (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at, payload)
SELECT md5(m.id::text || '/us-east-1/' || extract(epoch FROM m.next_check_at)::text)::uuid,
       m.id, coalesce(m.preferred_region, 'us-east-1'), m.criticality,
       m.next_check_at, m.next_check_at,
       m.next_check_at + make_interval(mins => m.check_interval_minutes),
       jsonb_build_object(
           'url', m.url, 'method', m.method, 'timeout_ms', m.timeout_ms,
           'expected_status', to_jsonb(m.expected_status),
           'retry', jsonb_build_object('max_attempts', m.check_retries + 1,
                                       'delay_ms', m.check_retry_delay_ms))
  FROM public.monitors m
"""


def _settle(conn: psycopg.Connection) -> None:
    """The same starting point for every run: no dead rows, fresh statistics, clean buffers."""
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def _timed(conn: psycopg.Connection, sql: str, params: dict | None = None) -> float:
    t0 = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - t0


def bench_tick(
    monitors: int = 100_000, runs: int = 3, chunk: int = TickParams.chunk, mix: bool = False
) -> dict[str, Any]:
    """Seconds for one tick over `monitors` due monitors (median of `runs`), and the raw
    INSERT ... SELECT of as many jsonb outbox rows as a reference. With mix, 10% of the
    monitors are sub-minute and 10% three-region (more jobs than monitors)."""
    if monitors < 1 or runs < 1 or chunk < 1:
        raise ValueError("monitors, runs and chunk must be >= 1")
    with EmbeddedPostgres(fast=False) as server:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        dsn = server.dsn(DATABASE)
        # no pg_cron in this database: the migration's warning about it is expected
        with contextlib.redirect_stderr(io.StringIO()):
            migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(_SEED_REGIONS)
            conn.execute(_SEED_MONITORS, {"n": monitors})
            conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
            if mix:
                conn.execute(_SEED_MIX)
                # a bulk UPDATE is logged too: followed now, not inside the first timed tick
                conn.execute("SELECT pgpulse.follow_apply(1000000)")

            conn.execute("CREATE TABLE bench_outbox_copy (LIKE pgpulse.outbox INCLUDING ALL)")
            # tick and reference take turns, so that both see the same machine
            tick_seconds: list[float] = []
            insert_seconds: list[float] = []
            jobs: list[int] = []
            for _ in range(runs):
                conn.execute("TRUNCATE pgpulse.outbox")
                conn.execute(_RESET_MONITORS)
                _settle(conn)
                tick_seconds.append(
                    _timed(
                        conn,
                        "CALL pgpulse.tick(p_trigger => 'bench', p_chunk => %(chunk)s)",
                        {"chunk": chunk},
                    )
                )
                run = one(
                    conn.cursor(row_factory=dict_row)
                    .execute(
                        "SELECT monitors_claimed, jobs_written, cut_short FROM pgpulse.tick_runs"
                        " ORDER BY id DESC LIMIT 1"
                    )
                    .fetchone()
                )
                claimed, written, cut = (
                    run["monitors_claimed"],
                    run["jobs_written"],
                    run["cut_short"],
                )
                jobs.append(written)
                # with sub-minute monitors a later chunk's horizon (a little later) can claim
                # a monitor again for its next slot
                if (
                    (claimed < monitors if mix else claimed != monitors)
                    or written < monitors
                    or (written > monitors) != mix
                    or cut
                ):
                    raise RuntimeError(
                        f"bench tick claimed {claimed} and wrote {written} of "
                        f"{monitors} jobs (cut short: {cut})"
                    )

                conn.execute("TRUNCATE bench_outbox_copy")
                _settle(conn)
                insert_seconds.append(_timed(conn, _RAW_INSERT))

    median = statistics.median(tick_seconds)
    return {
        "monitors": monitors,
        "mix": "10% sub-minute (10-30 s), 10% three-region" if mix else None,
        "jobs_written_median": statistics.median(jobs),
        "runs": runs,
        "chunk": chunk,
        "seconds_median": round(median, 4),
        "monitors_per_s_median": round(monitors / median),
        "seconds_all": [round(s, 4) for s in tick_seconds],
        "raw_insert_seconds_median": round(statistics.median(insert_seconds), 4),
        "raw_insert_seconds_all": [round(s, 4) for s in insert_seconds],
    }


if __name__ == "__main__":
    import json
    import sys

    args = (int(a) for a in sys.argv[1:])  # monitors runs chunk mix(0/1)
    print(json.dumps(bench_tick(*args)))  # type: ignore[arg-type]
