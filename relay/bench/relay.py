"""`pgpulse bench relay`: jobs per second from the outbox to Redis through the dev server,
and the delivery lag (published_at - deliver_at), on throwaway local parts."""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
from psycopg.rows import dict_row

from relay import logs
from relay.bench import percentile
from relay.config import RelaySettings
from relay.db import one
from relay.delivery.service import Relay
from relay.local.stack import LocalStack

# Outbox rows as the tick writes them, spread evenly over the regions.
SEED_JOBS = """
INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                            deliver_at, expires_at, payload)
SELECT md5(%(run)s || '/' || g)::uuid, md5('m' || %(run)s || '/' || g)::uuid,
       (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])],
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
       %(start)s::timestamptz + (g / %(rate)s::float8) * interval '1 second',
       %(start)s::timestamptz + (g / %(rate)s::float8) * interval '1 second',
       %(start)s::timestamptz + (g / %(rate)s::float8) * interval '1 second' + interval '5 minutes',
       jsonb_build_object('url', 'https://example.com/health/' || g, 'method', 'GET',
                          'timeout_ms', 10000, 'expected_status', jsonb_build_array(200),
                          'retry', jsonb_build_object('max_attempts', 2, 'delay_ms', 2000))
  FROM generate_series(1, %(jobs)s) g
"""


# Monitors every `interval` seconds, so many that `rate` jobs fall due per second; their
# first slots (spread by phase) from eight seconds from now, after the tick has written them. The real tick then
# writes every slot of the next `seconds`.
SEED_INTERVAL_MONITORS = """
INSERT INTO public.monitors (url, check_interval_seconds, preferred_region, next_check_at)
SELECT 'https://example.com/health/' || g, %(interval)s,
       (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])],
       pgpulse.next_slot(md5('bench/' || g)::uuid, %(interval)s, now() + interval '8 seconds')
  FROM generate_series(1, %(monitors)s) g
"""


def _seed_interval_monitors(stack: LocalStack, rate: float, interval_s: int) -> int:
    """Sub-minute monitors; returns how many."""
    monitors = max(1, round(rate * interval_s))
    with stack.connect() as conn:
        conn.execute(
            SEED_INTERVAL_MONITORS,
            {"interval": interval_s, "regions": list(stack.region_codes), "monitors": monitors},
        )
        conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
        conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
    return monitors


def _tick_interval_monitors(stack: LocalStack, seconds: float) -> dict[str, Any]:
    """One real tick over them, writing every slot of the next 8 + `seconds` seconds (while
    the relay runs, as in production); its record."""
    with stack.connect(row_factory=dict_row) as conn:
        wait_listening(conn)
        run_id = one(
            conn.execute(
                "CALL pgpulse.tick(NULL, 'bench', '55 seconds', make_interval(secs => %s))",
                (8 + seconds,),
            ).fetchone()
        )["run_id"]
        return one(
            conn.execute(
                "SELECT jobs_written AS jobs, monitors_claimed, cut_short,"
                "       extract(epoch FROM finished_at - started_at)::float8 AS seconds"
                "  FROM pgpulse.tick_runs WHERE id = %s",
                (run_id,),
            ).fetchone()
        )


def wait_listening(conn, timeout: float = 30) -> None:
    """Until a relay's LISTEN connection is up."""
    deadline = time.monotonic() + timeout
    while not conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
    ).fetchone():
        if time.monotonic() > deadline:
            raise RuntimeError(f"relay not listening within {timeout:g} s")
        time.sleep(0.05)


def queued_jobs(stack: LocalStack) -> int:
    """Jobs in every region's queues; raises if any job_id is there twice."""
    total, job_ids = 0, set()
    for region in stack.region_codes:
        client = redis.Redis.from_url(stack.redis.url, db=stack.redis_db(region))
        for key in client.scan_iter("pgpulse:jobs:*"):
            for value in client.lrange(key, 0, -1):
                total += 1
                job_ids.add(json.loads(value).get("job_id"))
        client.close()
    if len(job_ids) != total:
        raise RuntimeError(f"{total - len(job_ids)} duplicate jobs in Redis")
    return total


def flush_queues(stack: LocalStack) -> None:
    for region in stack.region_codes:
        client = redis.Redis.from_url(stack.redis.url, db=stack.redis_db(region))
        client.flushdb()
        client.close()


def _seed(stack: LocalStack, run: int, jobs: int, rate: float | None) -> float:
    """Seeds jobs; with a rate they fall due at that rate from two seconds from now."""
    with stack.connect(row_factory=dict_row) as conn:
        start = one(
            conn.execute(
                "SELECT now() + interval '2 seconds' AS start"
                if rate
                else "SELECT now() - interval '1 second' AS start"
            ).fetchone()
        )["start"]
        conn.execute(
            SEED_JOBS,
            {
                "run": str(run),
                "regions": list(stack.region_codes),
                "start": start,
                "rate": rate or 1e9,
                "jobs": jobs,
            },
        )
        conn.execute("VACUUM ANALYZE pgpulse.outbox")
    return start.timestamp()


async def _drain(
    stack: LocalStack,
    settings: RelaySettings,
    *,
    once: bool,
    until_published: int,
    write: Callable[[], dict[str, Any]] | None = None,
) -> tuple[float, Relay, list[float], dict[str, Any] | None]:
    """Runs a relay until it has dealt with `until_published` jobs (published, or dropped
    as expired, or dead-lettered), or with the jobs `write` reports it wrote while the relay
    ran (`write`'s record is returned)."""
    lags: list[float] = []
    relay = Relay(
        stack.dsn,
        settings,
        env=stack.env(),
        once=once,
        on_batch=lambda batch: lags.extend(batch.lags()),
    )
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    written = None
    if write is not None:
        written = await asyncio.to_thread(write)
        until_published = written["jobs"]
    if not once:
        c = relay.counts
        while c.published + c.expired + c.dead_lettered < until_published and not task.done():
            await asyncio.sleep(0.05)
        relay.stop.set()
    await task
    return time.perf_counter() - started, relay, lags, written


def bench_relay(
    jobs: int = 100_000,
    latency_ms: float = 0,
    runs: int = 3,
    batch: int = RelaySettings.batch_size,
    concurrency: int = RelaySettings.concurrency,
) -> dict[str, Any]:
    """Throughput: a full outbox of due jobs drained by one relay (--once), median of runs."""
    logs.setup("WARNING")
    settings = RelaySettings(batch_size=batch, concurrency=concurrency)
    seconds, lag_p50, lag_p99 = [], [], []
    with LocalStack(pg_cron=False) as stack:
        with stack.connect() as conn:
            stack.create_regions(conn)
        if latency_ms:
            stack.devserver.set_faults({"latency_ms": latency_ms})
        for run in range(runs):
            flush_queues(stack)
            _seed(stack, run, jobs, None)
            elapsed, relay, lags, _ = asyncio.run(
                _drain(stack, settings, once=True, until_published=jobs)
            )
            delivered = queued_jobs(stack)
            if delivered != jobs or relay.counts.published != jobs:
                raise RuntimeError(f"run {run}: {delivered} jobs in Redis, expected {jobs}")
            seconds.append(elapsed)
            lag_p50.append(percentile(lags, 0.50))
            lag_p99.append(percentile(lags, 0.99))
    median = statistics.median(seconds)
    return {
        "bench": "relay",
        "jobs": jobs,
        "latency_ms": latency_ms,
        "runs": runs,
        "batch_size": batch,
        "concurrency_per_region": concurrency,
        "regions": len(stack.region_codes),
        "seconds_median": round(median, 3),
        "jobs_per_s_median": round(jobs / median),
        "seconds_all": [round(s, 3) for s in seconds],
        "lag_p50_ms": round(statistics.median(lag_p50) * 1000, 1),
        "lag_p99_ms": round(statistics.median(lag_p99) * 1000, 1),
        "note": "lag here is mostly time spent waiting in a full backlog; "
        "`pgpulse bench relay-lag` (bench relay_lag) measures delivery lag",
    }


def bench_relay_lag(
    rate: float = 2000,
    seconds: float = 30,
    latency_ms: float = 0,
    batch: int = RelaySettings.batch_size,
    concurrency: int = RelaySettings.concurrency,
    interval_s: int | None = None,
) -> dict[str, Any]:
    """Steady state: jobs fall due at `rate` per second; lag = published_at - deliver_at.
    With interval_s, the jobs are the slots of rate * interval_s monitors checked every
    interval_s seconds, written by the real tick while the relay runs (their first slots
    8 s after the tick starts: a tick slower than that makes them late, and says so)."""
    logs.setup("WARNING")
    jobs, write, monitors = int(rate * seconds), None, None
    with LocalStack(pg_cron=False) as stack:
        with stack.connect() as conn:
            stack.create_regions(conn)
        if latency_ms:
            stack.devserver.set_faults({"latency_ms": latency_ms})
        if interval_s:
            monitors = _seed_interval_monitors(stack, rate, interval_s)
            write = functools.partial(_tick_interval_monitors, stack, seconds)
        else:
            _seed(stack, 0, jobs, rate)
        elapsed, relay, lags, tick = asyncio.run(
            _drain(
                stack,
                RelaySettings(batch_size=batch, concurrency=concurrency),
                once=False,
                until_published=jobs,
                write=write,
            )
        )
        delivered = queued_jobs(stack)
    counts = relay.counts
    jobs = tick["jobs"] if tick else jobs
    if delivered + counts.expired + counts.dead_lettered != jobs:
        raise RuntimeError(
            f"{delivered} jobs in Redis, {counts.expired} expired, "
            f"{counts.dead_lettered} dead-lettered: {jobs} were written"
        )
    record = {
        "bench": "relay_lag",
        "rate_per_s": rate,
        "seconds": seconds,
        "jobs": jobs,
        "interval_s": interval_s,
        "latency_ms": latency_ms,
        "delivered": delivered,
        "lag_p50_ms": round(percentile(lags, 0.50) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags, default=0) * 1000, 1),
        "early": sum(1 for lag in lags if lag < 0),
        # dropped by the relay: their slot's interval had passed (the worst lag)
        "expired": counts.expired,
        "jobs_per_batch": round(counts.published / max(counts.batches, 1), 1),
    }
    if tick:
        # a tick's horizon moves with each chunk: a slow tick claims monitors again
        record |= {
            "tick_seconds": round(tick["seconds"], 3),
            "tick_cut_short": tick["cut_short"],
            "tick_monitors_claimed": tick["monitors_claimed"],
            "monitors": monitors,
        }
    return record
