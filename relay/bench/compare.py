"""`pgpulse bench compare`: pgpulse against the old serverless endpoint, side by side, on the
same database, the same dev server and the same added latency.

The old way, as the replaced endpoint did it: select the due monitors, then for each one
push its job with one REST call and bump it with one UPDATE (next = now() + interval),
inside a time budget (45 s). pgpulse: one tick, then one relay draining the outbox.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from psycopg.rows import dict_row

from relay import logs
from relay.bench.relay import flush_queues, queued_jobs
from relay.config import RelaySettings
from relay.delivery.service import Relay
from relay.local.stack import LocalStack
from relay.schedule.tick import TickParams, run_tick

SEED_MONITORS = """
INSERT INTO public.monitors (url, check_interval_minutes, criticality, preferred_region,
                             next_check_at)
SELECT 'https://example.com/health/' || g, 5, (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
       CASE WHEN g %% 2 = 0 THEN (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])] END,
       now() - interval '10 seconds'
  FROM generate_series(1, %(monitors)s) g
"""
# pgpulse's clock moved back for its turn (the old way's bumps moved it on, through the
# triggers that follow the product's next_check_at)
MAKE_DUE = "UPDATE pgpulse.schedule SET next_check_at = now() - interval '10 seconds'"
DUE = """SELECT id, url, criticality, preferred_region, check_interval_minutes
           FROM public.monitors WHERE is_active AND next_check_at <= now()
          ORDER BY next_check_at"""
BUMP = """UPDATE public.monitors
             SET next_check_at = now() + make_interval(mins => %s), last_scheduled_at = now()
           WHERE id = %s"""


def old_way(stack: LocalStack, budget_s: float) -> dict[str, Any]:
    """One REST push and one UPDATE per due monitor, in a loop, until done or out of budget."""
    regions = list(stack.region_codes)
    started = time.perf_counter()
    done = 0
    with (
        stack.connect(row_factory=dict_row) as conn,
        httpx.Client(base_url=stack.devserver.url, timeout=10) as http,
    ):
        due = conn.execute(DUE).fetchall()
        headers = {code: {"Authorization": f"Bearer {tok}"} for code, tok in stack.tokens.items()}
        for i, monitor in enumerate(due):
            if time.perf_counter() - started > budget_s:
                break
            monitor_id, criticality = monitor["id"], monitor["criticality"]
            region = monitor["preferred_region"] or regions[i % len(regions)]
            job = json.dumps(
                {
                    "job_id": f"{monitor_id}/{i}",
                    "monitor_id": str(monitor_id),
                    "url": monitor["url"],
                    "region": region,
                    "criticality": criticality,
                }
            )
            reply = http.post(
                "/",
                json=["LPUSH", f"pgpulse:jobs:{region}:{criticality}", job],
                headers=headers[region],
            )
            reply.raise_for_status()
            conn.execute(BUMP, (monitor["check_interval_minutes"], monitor_id))
            done += 1
    elapsed = time.perf_counter() - started
    return {
        "monitors_done": done,
        "monitors_due": len(due),
        "seconds": round(elapsed, 3),
        "monitors_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "finished": done == len(due),
        "projected_seconds_for_all": round(len(due) * elapsed / done, 1) if done else None,
    }


def new_way(stack: LocalStack, monitors: int) -> dict[str, Any]:
    """One tick (the SQL function pg_cron runs) and one relay run until the outbox is empty."""
    started = time.perf_counter()
    tick = run_tick(stack.dsn, TickParams(lookahead_s=0), trigger="bench")
    tick_s = time.perf_counter() - started
    relay = Relay(stack.dsn, RelaySettings(), env=stack.env(), once=True)
    counts = asyncio.run(relay.run())
    elapsed = time.perf_counter() - started
    return {
        "monitors_done": counts.published,
        "monitors_due": monitors,
        "seconds": round(elapsed, 3),
        "tick_seconds": round(tick_s, 3),
        "jobs_written": tick["jobs_written"],
        "monitors_per_s": round(counts.published / elapsed, 1),
        "finished": counts.published == monitors,
    }


def bench_compare(
    monitors: int = 1000, latency_ms: float = 0, baseline_budget_s: float = 45.0
) -> dict[str, Any]:
    logs.setup("WARNING")
    with LocalStack(pg_cron=False) as stack:
        with stack.connect() as conn:
            stack.create_regions(conn)
            conn.execute(SEED_MONITORS, {"monitors": monitors, "regions": list(stack.region_codes)})
            conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
            conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
        if latency_ms:
            stack.devserver.set_faults({"latency_ms": latency_ms})
        old = old_way(stack, baseline_budget_s)
        old["queued"] = queued_jobs(stack)
        flush_queues(stack)
        with stack.connect() as conn:
            conn.execute(MAKE_DUE)
            conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
        new = new_way(stack, monitors)
        new["queued"] = queued_jobs(stack)
    return {
        "bench": "compare",
        "monitors": monitors,
        "latency_ms": latency_ms,
        "baseline_budget_s": baseline_budget_s,
        "old_way": old,
        "pgpulse": new,
        "speedup": round(new["monitors_per_s"] / old["monitors_per_s"], 1)
        if old["monitors_per_s"]
        else None,
    }
