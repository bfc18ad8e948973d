"""`pgpulse bench results`: check results per second from the regions' results lists into
PostgreSQL (docs/results.md), through one relay: take a batch from the dev server, check each
result, upsert it, remove the batch; the latest table alone, then with the history on."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import redis

from relay import logs
from relay.config import RelaySettings
from relay.db import one
from relay.delivery.service import Relay
from relay.local.stack import LocalStack

FLOOR = 20_000  # results/s, the floor, for the latest table and with history
SLOT_S = 60  # one-minute monitors: each result of a run is a new slot of its monitor


def _monitors(stack: LocalStack, n: int) -> list[tuple[str, str]]:
    """n monitors spread over the regions, with their ids; (id, region)."""
    with stack.connect() as conn:
        rows = conn.execute(
            "INSERT INTO public.monitors (url, preferred_region, check_interval_minutes)"
            " SELECT 'https://example.com/health/' || g,"
            "        (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])], 1"
            "   FROM generate_series(1, %(n)s) g RETURNING id::text, preferred_region",
            {"regions": list(stack.region_codes), "n": n},
        ).fetchall()
        conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
        conn.execute("VACUUM ANALYZE pgpulse.schedule")
    return rows


def _fill(stack: LocalStack, monitors: list[tuple[str, str]], slots: int, base: float) -> int:
    """Results list entries as the ack script writes them: one per monitor and slot, in
    each monitor's region's list; returns how many."""
    clients = {
        code: redis.Redis.from_url(stack.redis.url, db=stack.redis_db(code))
        for code in stack.region_codes
    }
    total = 0
    try:
        for k in range(slots):
            slot = base + k * SLOT_S
            scheduled = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(slot))
            batches: dict[str, list[str]] = {code: [] for code in stack.region_codes}
            for i, (monitor, region) in enumerate(monitors):
                batches[region].append(
                    json.dumps(
                        {
                            "job_id": f"{i:08x}-0000-4000-8000-{k:012x}",
                            "monitor_id": monitor,
                            "region": region,
                            "scheduled_for": scheduled,
                            "worker": "bench-worker:1:abcdef",
                            "acked_ms": int((slot + 1) * 1000),
                            "result": {
                                "job_id": f"{i:08x}-0000-4000-8000-{k:012x}",
                                "monitor_id": monitor,
                                "url": f"https://example.com/health/{i}",
                                "region": region,
                                "scheduled_for": slot,
                                "started_at": slot + 0.01,
                                "finished_at": slot + 0.2,
                                "ok": i % 50 != 0,
                                "status": 200 if i % 50 else 503,
                                "latency_ms": 180.5,
                                "error": None if i % 50 else "status_mismatch",
                                "detail": "HTTP 200" if i % 50 else "HTTP 503, expected 200",
                                "attempts": 1,
                                "address": "93.184.215.14",
                                "run": 1,
                            },
                        },
                        separators=(",", ":"),
                    )
                )
            for code, entries in batches.items():
                pipe = clients[code].pipeline(transaction=False)
                for start in range(0, len(entries), 5000):
                    pipe.lpush(f"pgpulse:results:{code}", *entries[start : start + 5000])
                pipe.execute()
                total += len(entries)
    finally:
        for client in clients.values():
            client.close()
    return total


async def _drain(stack: LocalStack, settings: RelaySettings, total: int) -> tuple[float, Relay]:
    relay = Relay(stack.dsn, settings, env=stack.env(), handle_signals=False)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    c = relay.counts
    while c.results + c.results_malformed < total and not task.done():
        if time.perf_counter() - started > 600:  # never a silent hang: say what arrived
            relay.stop.set()
            await task
            raise RuntimeError(f"bench results: {c.results} of {total} results stored in 600 s")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    relay.stop.set()
    await task
    return elapsed, relay


def bench_results(
    results: int = 200_000, runs: int = 3, batch: int = RelaySettings.results_batch
) -> list[dict[str, Any]]:
    """Two records: the latest table alone, and with the history on; each the median of
    `runs` (a fresh table each run, every result a new slot of its monitor)."""
    logs.setup("WARNING")
    settings = RelaySettings(results_batch=batch, depth_interval_s=1.0)
    slots = 2
    records = []
    with LocalStack(pg_cron=False, fast_db=False) as stack:
        with stack.connect() as conn:
            stack.create_regions(conn)
        monitors = _monitors(stack, max(1, results // slots))
        for history in (False, True):
            with stack.connect() as conn:
                name = one(conn.execute("SELECT current_database()").fetchone())[0]
                conn.execute(
                    f'ALTER DATABASE "{name}" SET pgpulse.results_history = '
                    + ("on" if history else "off")
                )
            seconds, wal, sizes = [], [], []
            for run in range(runs):
                with stack.connect() as conn:
                    conn.execute("TRUNCATE pgpulse.results_latest, pgpulse.results_history")
                    conn.execute("CHECKPOINT")
                    lsn = one(conn.execute("SELECT pg_current_wal_lsn()").fetchone())[0]
                base = (time.time() // SLOT_S - slots - run * slots) * SLOT_S
                total = _fill(stack, monitors, slots, base)
                elapsed, relay = asyncio.run(_drain(stack, settings, total))
                stored, malformed = relay.counts.results, relay.counts.results_malformed
                with stack.connect() as conn:
                    row = conn.execute(
                        "SELECT (SELECT count(*) FROM pgpulse.results_latest) AS latest,"
                        " (SELECT count(*) FROM pgpulse.results_history) AS history,"
                        " pg_wal_lsn_diff(pg_current_wal_lsn(), %s) AS wal,"
                        " (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)"
                        "    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                        "   WHERE i.inhparent = 'pgpulse.results_history'::regclass) AS bytes",
                        (lsn,),
                    ).fetchone()
                    assert row is not None  # an aggregate's row
                if stored != total or malformed or row[0] != len(monitors):
                    raise RuntimeError(
                        f"run {run}: {stored} of {total} results stored, {malformed} malformed,"
                        f" {row[0]} latest rows for {len(monitors)} monitors"
                    )
                if history and row[1] != total:
                    raise RuntimeError(f"run {run}: {row[1]} history rows for {total} results")
                seconds.append(elapsed)
                wal.append(float(row[2]) / total)
                if history:
                    sizes.append(float(row[3]) / total)
            median = statistics.median(seconds)
            record: dict[str, Any] = {
                "bench": "results",
                "history": history,
                "results": total,
                "monitors": len(monitors),
                "regions": len(stack.region_codes),
                "batch": batch,
                "runs": runs,
                "seconds": round(median, 3),
                "results_per_s": round(total / median),
                "floor_per_s": FLOOR,
                "wal_bytes_per_result": round(statistics.median(wal)),
            }
            if history:
                record["history_bytes_per_row"] = round(statistics.median(sizes))
            records.append(record)
    return records
