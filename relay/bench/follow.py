"""What following costs the product's writers: the same statements on public.monitors (with
pgpulse's triggers) and on a copy of it without them, taking turns, on a durable PostgreSQL.

Per row, for N rows: INSERT (over 500 rows: logged, followed afterwards, which is timed too),
UPDATE of a followed column, UPDATE of a column pgpulse does not follow, an ORM's full-row
save writing back what it read; and a single-row INSERT's latency, idle and while a tick over
N due monitors runs.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import threading
import time
from typing import Any

import psycopg

from relay import migrate
from relay.bench import percentile
from relay.local.embedded import EmbeddedPostgres

DATABASE = "pgpulse_bench_follow"

_INSERT = """
INSERT INTO {table} (url, check_interval_minutes, criticality, preferred_region)
SELECT 'https://example.com/health/' || g, 1 + g %% 60,
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4], NULL
  FROM generate_series(1, %(n)s) g
"""
_UPDATE_FOLLOWED = "UPDATE {table} SET timeout_ms = timeout_ms %% 50000 + 1000"
_UPDATE_UNFOLLOWED = "UPDATE {table} SET created_at = created_at + interval '1 second'"
# an ORM's save: every column written back as it was read
_FULL_ROW_SAVE = """
UPDATE {table} SET url = url, method = method, timeout_ms = timeout_ms,
       expected_status = expected_status, check_retries = check_retries,
       check_retry_delay_ms = check_retry_delay_ms,
       check_interval_minutes = check_interval_minutes, is_active = is_active,
       preferred_region = preferred_region, allow_fallback = allow_fallback,
       criticality = criticality, next_check_at = next_check_at,
       check_interval_seconds = check_interval_seconds, check_regions = check_regions
"""
_ONE_ROW = "INSERT INTO {table} (url) VALUES ('https://example.com/one/' || %(i)s)"
_FOLLOW_APPLY = "SELECT pgpulse.follow_apply(1000000)"
_MAKE_DUE = "UPDATE pgpulse.schedule SET next_check_at = now() - random() * interval '30 s'"

CASES = {
    "insert": _INSERT,
    "update_followed": _UPDATE_FOLLOWED,
    "update_unfollowed": _UPDATE_UNFOLLOWED,
    "full_row_save": _FULL_ROW_SAVE,
}


def _settle(conn: psycopg.Connection) -> None:
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def _timed(conn: psycopg.Connection, sql: str, params: dict | None = None) -> float:
    t0 = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - t0


def _one_row_latencies(dsn: str, table: str, count: int, stop: threading.Event | None) -> list:
    """Milliseconds per single-row INSERT (autocommit), `count` of them or until `stop`."""
    out: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            out.append(_timed(conn, _ONE_ROW.format(table=table), {"i": i}) * 1000)
    return out


def _during_tick(dsn: str, table: str) -> tuple[list[float], float]:
    """Single-row INSERTs while one tick runs over the due schedule: their latencies (ms)
    and the tick's seconds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pgpulse.outbox")
        conn.execute(_MAKE_DUE)
        _settle(conn)
    stop = threading.Event()
    latencies: list[float] = []
    writer = threading.Thread(
        target=lambda: latencies.extend(_one_row_latencies(dsn, table, 1_000_000, stop))
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        writer.start()
        try:
            tick_s = _timed(conn, "CALL pgpulse.tick(p_trigger => 'bench')")
        finally:
            stop.set()
            writer.join()
    return latencies, tick_s


def _latency(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.5), 3),
        "p99_ms": round(percentile(values, 0.99), 3),
    }


def bench_follow(rows: int = 100_000, runs: int = 3) -> dict[str, Any]:
    """Per-row microseconds of each statement on the followed table and on the bare copy
    (medians of `runs`, taking turns), their ratio, and single-row INSERT latencies."""
    if rows < 1 or runs < 1:
        raise ValueError("rows and runs must be >= 1")
    apply_seconds: list[float] = []
    seconds: dict[str, dict[str, list[float]]] = {
        case: {"bare": [], "followed": []} for case in CASES
    }
    with EmbeddedPostgres(fast=False) as server:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        dsn = server.dsn(DATABASE)
        with contextlib.redirect_stderr(io.StringIO()):  # no pg_cron here: expected warning
            migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO pgpulse.regions (code, is_default) VALUES ('eu', true)")
            conn.execute("CREATE TABLE public.bench_bare (LIKE public.monitors INCLUDING ALL)")
            tables = {"bare": "public.bench_bare", "followed": "public.monitors"}
            for _ in range(runs):
                for table in tables.values():
                    conn.execute(f"TRUNCATE {table}")
                for case, sql in CASES.items():
                    for kind, table in tables.items():
                        _settle(conn)
                        seconds[case][kind].append(
                            _timed(conn, sql.format(table=table), {"n": rows})
                        )
                        if case == "insert" and kind == "followed":
                            # a bulk insert is logged: what following it costs, afterwards
                            apply_seconds.append(_timed(conn, _FOLLOW_APPLY))
            idle = {kind: _one_row_latencies(dsn, t, 500, None) for kind, t in tables.items()}
            during = {kind: _during_tick(dsn, t) for kind, t in tables.items()}

    figures: dict[str, Any] = {}
    for case, by_kind in seconds.items():
        bare = statistics.median(by_kind["bare"])
        followed = statistics.median(by_kind["followed"])
        figures[case] = {
            "bare_us_per_row": round(bare / rows * 1e6, 2),
            "followed_us_per_row": round(followed / rows * 1e6, 2),
            "ratio": round(followed / bare, 2),
        }
    return {
        "rows": rows,
        "runs": runs,
        **figures,
        # a bulk insert's rows followed after its statement (the relay's or a tick's work)
        "follow_apply_us_per_row": round(statistics.median(apply_seconds) / rows * 1e6, 2),
        "single_insert_idle": {kind: _latency(v) for kind, v in idle.items()},
        "single_insert_during_tick": {
            kind: _latency(lat) | {"tick_s": round(tick_s, 3)}
            for kind, (lat, tick_s) in during.items()
        },
    }
