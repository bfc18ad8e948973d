"""`pgpulse demo` / `make demo`: the whole system, live, on throwaway local parts.

PostgreSQL with pg_cron ticking every minute, 10,000 monitors, three regions behind the
Upstash-compatible dev server, the relay, and a real `pgpulse worker` per region checking
local HTTP targets (some slow, one that goes down and comes back). A tenth of the monitors
are checked from all three regions at once, a tenth every 10 seconds. Part-way through, one
region goes down for a while: watch its breaker open, its jobs reroute, and the region
recover; a maintenance window (Europe/Berlin time) opens and closes over some monitors,
whose slots are skipped meanwhile. Later another region's worker stops for a while: the
relay marks its workers absent, its monitors are checked from its fallback region, and
come back with the worker. The workers' results land in PostgreSQL (history on): the
summary counts them per region. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from relay import logs
from relay.bench import percentile
from relay.config import RelaySettings
from relay.db import one
from relay.delivery.service import Relay
from relay.local.stack import LocalStack
from relay.local.targets import LocalTargets
from relay.ops import metrics
from relay.schedule.tick import run_tick

SEED = """
INSERT INTO public.monitors (url, check_interval_minutes, criticality, preferred_region,
                             allow_fallback, timeout_ms)
SELECT %(target)s || CASE WHEN g %% 100 = 3 THEN '/flaky?m=' || g
                         WHEN g %% 10 = 1 THEN '/ok?ms=800&m=' || g
                         ELSE '/ok?m=' || g END,
       (ARRAY[1, 1, 2, 5, 5, 10, 15])[1 + g %% 7],
       (ARRAY['critical', 'high', 'normal', 'normal', 'normal', 'low'])[1 + g %% 6],
       CASE WHEN g %% 5 < 2 THEN NULL
            ELSE (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])] END,
       g %% 20 <> 0,
       (ARRAY[5000, 10000, 30000])[1 + g %% 3]
  FROM generate_series(1, %(monitors)s) g
"""
# A tenth of the monitors every 10 seconds (the flaky target among them), another tenth from
# every region at once.
SEED_MIX = """
UPDATE public.monitors m
   SET check_interval_seconds = CASE WHEN n.g %% 10 = 3 THEN 10 ELSE m.check_interval_seconds END,
       check_regions = CASE WHEN n.g %% 10 = 4 THEN %(regions)s::text[] END
  FROM (SELECT id, split_part(url, 'm=', 2)::integer AS g FROM public.monitors) n
 WHERE n.id = m.id AND n.g %% 10 IN (3, 4)
"""
# The maintenance window: the 'low' monitors, from `opens` to `closes` seconds from now,
# given in Berlin wall-clock time as an operator would.
MAINTENANCE = """
INSERT INTO pgpulse.maintenance_windows (name, monitor_ids, time_zone, starts_local, ends_local)
SELECT 'demo: db upgrade', array_agg(id::text), 'Europe/Berlin',
       (now() + make_interval(secs => %(opens)s)) AT TIME ZONE 'Europe/Berlin',
       (now() + make_interval(secs => %(closes)s)) AT TIME ZONE 'Europe/Berlin'
  FROM public.monitors WHERE criticality = 'low'
RETURNING id, cardinality(monitor_ids) AS monitors, starts_local, ends_local
"""
WINDOW_STATE = """
SELECT w.skipped_slots, pgpulse.maintenance_window_at(w.monitor_ids[1], now()) IS NOT NULL AS open
  FROM pgpulse.maintenance_windows w WHERE w.id = %(id)s
"""
# Published slots of three-region monitors (all three regions done), 10-second jobs, skipped.
FEATURES = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM public.demo_published p JOIN public.monitors m ON m.id = p.monitor_id
                               WHERE m.check_regions IS NOT NULL
                               GROUP BY p.monitor_id, p.scheduled_for
                              HAVING count(DISTINCT p.region) = 3) s) AS three_region_slots,
       (SELECT count(DISTINCT (p.monitor_id, p.scheduled_for)) FROM public.demo_published p
          JOIN public.monitors m ON m.id = p.monitor_id
         WHERE m.check_interval_seconds = 10) AS ten_second_jobs,
       (SELECT skipped_slots FROM pgpulse.maintenance_windows WHERE id = %(id)s) AS skipped
"""
# The demo keeps what the tick wrote (the relay deletes published rows).
RECORD = """
CREATE TABLE public.demo_published (monitor_id uuid, region text, scheduled_for timestamptz);
-- qualified: it also fires inside pgpulse functions, whose search_path is pinned; SECURITY
-- DEFINER: those run as pgpulse_owner, which may not write the demo's table
CREATE FUNCTION public.demo_record() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.demo_published SELECT monitor_id, region, scheduled_for FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER demo_record AFTER DELETE ON pgpulse.outbox REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION public.demo_record();
"""
VIEW = """
SELECT (SELECT count(*) FROM pgpulse.outbox) AS outbox,
       (SELECT count(*) FROM pgpulse.outbox WHERE deliver_at <= now()) AS due,
       (SELECT count(*) FROM pgpulse.tick_runs WHERE trigger = 'pg_cron') AS cron_ticks,
       (SELECT jobs_written FROM pgpulse.tick_runs ORDER BY id DESC LIMIT 1) AS last_tick_jobs,
       (SELECT max(id) FROM pgpulse.tick_runs) AS last_tick,
       (SELECT string_agg(code, ', ') FROM pgpulse.regions WHERE NOT healthy) AS unhealthy,
       (SELECT string_agg(code, ', ') FROM pgpulse.regions WHERE workers_absent) AS absent
"""
# Results stored per region that ran the check; and of the monitors of the region whose
# worker stopped, those checked from elsewhere while it was away.
RESULTS = """
SELECT h.checked_from AS region, count(*) AS results,
       count(*) FILTER (WHERE m.preferred_region = %(stopped)s
                          AND h.checked_from <> %(stopped)s) AS of_stopped_region
  FROM pgpulse.results_history h JOIN public.monitors m ON m.id = h.monitor_id
 GROUP BY h.checked_from ORDER BY h.checked_from
"""


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def _published(region: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("pgpulse_jobs_published_total", {"region": region}) or 0
    )


class Workers:
    """A real `pgpulse worker` per region, reading its `worker_stats` lines as they come."""

    def __init__(self, stack: LocalStack, stats_interval_s: float = 2.0) -> None:
        self.stack = stack
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        self.read_at: dict[str, int] = {}
        self.totals: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.stats_interval_s = stats_interval_s

    def start(self) -> None:
        for region in self.stack.region_codes:
            self.start_one(region)

    def start_one(self, region: str) -> None:
        """The region's worker (its log file kept across restarts)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PGPULSE_")}
        env |= self.stack.env() | {
            "PGPULSE_ALLOW_PRIVATE_TARGETS": "on",  # the targets live on 127.0.0.1
            "PGPULSE_WORKER_STATS_INTERVAL_S": str(self.stats_interval_s),
            "PYTHONPATH": os.pathsep.join(
                p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p
            ),
        }
        env.pop("DATABASE_URL", None)  # a worker needs none
        if region not in self.logs:
            self.logs[region] = tempfile.NamedTemporaryFile(prefix=f"worker-{region}-")
            self.read_at[region] = 0
        self.procs[region] = subprocess.Popen(
            [sys.executable, "-m", "relay", "worker", "--region", region],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.logs[region],
        )

    def new_stats(self) -> dict[str, list[dict]]:
        """Per region, the worker_stats lines written since the last call."""
        found: dict[str, list[dict]] = {}
        for region, log in self.logs.items():
            with open(log.name, "rb") as f:
                f.seek(self.read_at[region])
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.read_at[region] += len(complete)
            events = []
            for line in complete.splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "worker_stats":
                        events.append(event)
                        self.totals[region] += event["checks"]
                        self.errors.update(event["errors"])
            found[region] = events
        return found

    def stop_one(self, region: str) -> None:
        """Every worker of the region stops (SIGTERM: the checks in flight finish)."""
        proc = self.procs[region]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the checks in flight finish
        for proc in self.procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.new_stats()  # their last lines
        for log in self.logs.values():
            log.close()


async def _live(
    stack: LocalStack,
    seconds: float,
    outage: tuple[float, float, str],
    window_id: int,
    targets: LocalTargets,
    workers_away: tuple[float, float, str],
) -> dict[str, Any]:
    all_lags: list[float] = []
    relay = Relay(
        stack.dsn,
        # a worker's absence is noticed after 10 s here (60 s by default)
        RelaySettings(breaker_cooldown_s=5.0, breaker_failures=3, workers_absent_s=10.0),
        env=stack.env(),
        on_batch=lambda batch: all_lags.extend(batch.lags()),
    )
    workers = Workers(stack)
    workers.start()
    relay_task = asyncio.create_task(relay.run(), name="relay")
    started = time.monotonic()
    outage_start, outage_end, outage_region = outage
    away_start, away_end, away_region = workers_away
    away = False
    absent_shown = None
    down = False
    last = {r: 0.0 for r in stack.region_codes}
    lag_seen = 0
    last_tick = None
    window_open = False
    flaky = (seconds * 0.1, seconds * 0.3)  # /flaky answers 503 meanwhile
    failing_shown: list[str] = []
    exec_lags: list[float] = []
    header = (
        "  time  "
        + "".join(f"{r + ' pub/chk':>16}" for r in stack.region_codes)
        + "   outbox    due  publish lag p50/p99 ms  check lag p99 ms  breakers"
    )
    print(header + "\n  " + "-" * (len(header) - 2), flush=True)
    try:
        async with await psycopg.AsyncConnection.connect(
            stack.dsn, autocommit=True, row_factory=dict_row
        ) as conn:
            while (elapsed := time.monotonic() - started) < seconds and not relay_task.done():
                if not down and outage_start <= elapsed < outage_end:
                    await asyncio.to_thread(stack.set_region_down, outage_region, True)
                    down = True
                    print(
                        f"  >>> {outage_region} goes down (its Upstash endpoint answers 503)",
                        flush=True,
                    )
                elif down and elapsed >= outage_end:
                    await asyncio.to_thread(stack.set_region_down, outage_region, False)
                    down = False
                    print(f"  >>> {outage_region} is back", flush=True)
                if not away and away_start <= elapsed < away_end:
                    await asyncio.to_thread(workers.stop_one, away_region)
                    away = True
                    print(f"  >>> {away_region}'s worker stops (SIGTERM)", flush=True)
                elif away and elapsed >= away_end and workers.procs[away_region].poll() is not None:
                    workers.start_one(away_region)
                    print(f"  >>> {away_region}'s worker starts again", flush=True)
                if not targets.down and flaky[0] <= elapsed < flaky[1]:
                    targets.down = True
                    print("  >>> target /flaky goes down (answers 503)", flush=True)
                elif targets.down and elapsed >= flaky[1]:
                    targets.down = False
                    print("  >>> target /flaky is back", flush=True)
                await asyncio.sleep(2.0)
                stats = workers.new_stats()
                checked = [sum(e["checks"] for e in stats[r]) / 2.0 for r in stack.region_codes]
                check_p99 = max((e["lag_p99_ms"] for es in stats.values() for e in es), default=0)
                exec_lags += [e["lag_p99_ms"] for es in stats.values() for e in es if e["checks"]]
                failing = sorted(
                    {
                        urlsplit(item.split(" ")[0]).path + " " + item.split(" ")[1]
                        for es in stats.values()
                        for e in es
                        for item in e["failing"]
                    }
                )
                if failing != failing_shown and any(stats.values()):
                    failing_shown = failing
                    print("  >>> failing targets: " + (", ".join(failing) or "none"), flush=True)
                state = one(await (await conn.execute(WINDOW_STATE, {"id": window_id})).fetchone())
                skipped, is_open = state["skipped_slots"], state["open"]
                if is_open != window_open:
                    window_open = is_open
                    print(
                        f"  >>> maintenance window {'opens' if is_open else 'closes'}"
                        f" ({skipped} slots skipped so far)",
                        flush=True,
                    )
                row = one(await (await conn.execute(VIEW)).fetchone())
                if row["absent"] != absent_shown:
                    if row["absent"]:
                        print(
                            f"  >>> the relay marks {row['absent']}'s workers absent: its "
                            "monitors that may fall back are checked from the fallback region",
                            flush=True,
                        )
                    elif absent_shown:
                        print(
                            f"  >>> {absent_shown}'s workers are back: its monitors return",
                            flush=True,
                        )
                    absent_shown = row["absent"]
                if row["last_tick"] != last_tick:
                    if last_tick is not None:
                        print(
                            f"  >>> pg_cron tick: {row['last_tick_jobs']} jobs for the next "
                            "minute"
                            + (
                                f" (routed around unhealthy {row['unhealthy']})"
                                if row["unhealthy"]
                                else ""
                            )
                            + (
                                f" (routed around {row['absent']}: workers absent)"
                                if row["absent"]
                                else ""
                            ),
                            flush=True,
                        )
                    last_tick = row["last_tick"]
                rates = []
                for region in stack.region_codes:
                    now_count = _published(region)
                    rates.append((now_count - last[region]) / 2.0)
                    last[region] = now_count
                lags = all_lags[lag_seen:]
                lag_seen = len(all_lags)
                breakers = " ".join(
                    f"{code.split('-')[0]}:{r.breaker.state.value}"
                    for code, r in sorted(relay.regions.items())
                )
                print(
                    f"  {elapsed:5.0f}s "
                    + "".join(f"{rate:>10.0f}/{chk:<5.0f}" for rate, chk in zip(rates, checked))
                    + f" {row['outbox']:>8} {row['due']:>6} "
                    + f"{_pct(lags, 0.5):>11.0f}/{_pct(lags, 0.99):<11.0f}"
                    + f"{check_p99:>15.0f}   {breakers}",
                    flush=True,
                )
            final = one(await (await conn.execute(VIEW)).fetchone())
            features = one(await (await conn.execute(FEATURES, {"id": window_id})).fetchone())
            # the results still waiting in the regions' lists first
            await asyncio.sleep(max(relay.settings.depth_interval_s, 1.0) * 2)
            stored = await (await conn.execute(RESULTS, {"stopped": away_region})).fetchall()
            ticks = await (
                await conn.execute(
                    "SELECT trigger, count(*) AS runs, sum(jobs_written) AS jobs,"
                    " max(extract(epoch FROM finished_at - started_at)) AS slowest"
                    " FROM pgpulse.tick_runs GROUP BY trigger ORDER BY trigger"
                )
            ).fetchall()
    finally:
        relay.stop.set()
        await asyncio.gather(relay_task, return_exceptions=True)
        await asyncio.to_thread(workers.stop)
    c = relay.counts
    return {
        "seconds": round(time.monotonic() - started, 1),
        "ticks": {
            t["trigger"]: {
                "runs": t["runs"],
                "jobs": int(t["jobs"] or 0),
                "slowest_s": round(float(t["slowest"] or 0), 3),
            }
            for t in ticks
        },
        "published": c.published,
        "rerouted": c.rerouted,
        "expired": c.expired,
        "failed_then_retried": c.failed,
        "dead_lettered": c.dead_lettered,
        "checked_by_workers": dict(workers.totals),
        "check_failures": dict(workers.errors),
        "target_requests": targets.hits,
        "publish_lag_p50_ms": round(_pct(all_lags, 0.5), 1),
        "publish_lag_p99_ms": round(_pct(all_lags, 0.99), 1),
        "check_lag_p99_ms_worst_2s": round(max(exec_lags, default=0.0), 1),
        "outbox_left": final["outbox"],
        "pg_cron_ticks": final["cron_ticks"],
        "three_region_slots_published": features["three_region_slots"],
        "ten_second_monitor_jobs_published": features["ten_second_jobs"],
        "maintenance_slots_skipped": features["skipped"],
        "results_stored": c.results,
        "results_malformed": c.results_malformed,
        "results_by_region": {r["region"]: r["results"] for r in stored},
        f"{away_region}_monitors_checked_elsewhere": sum(r["of_stopped_region"] for r in stored),
    }


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM tidies up like Ctrl-C


def run_demo(seconds: float = 120, monitors: int = 10_000) -> dict[str, Any]:
    logs.setup("ERROR")
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"pgpulse demo: {monitors} monitors, 3 regions, {seconds:.0f} s (Ctrl-C stops early)")
    print(
        "  starting a throwaway PostgreSQL with pg_cron, redis-server and the Upstash "
        "dev server ...",
        flush=True,
    )
    with LocalStack() as stack, LocalTargets() as targets:
        with stack.connect() as conn:  # the targets are local: allowed in this database
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET pgpulse.allow_private_targets = on").format(
                    sql.Identifier(conn.info.dbname)
                )
            )
            conn.execute(  # every result kept, to count them at the end
                sql.SQL("ALTER DATABASE {} SET pgpulse.results_history = on").format(
                    sql.Identifier(conn.info.dbname)
                )
            )
        with stack.connect(row_factory=dict_row) as conn:
            stack.create_regions(conn)
            conn.execute(
                SEED,
                {
                    "monitors": monitors,
                    "regions": list(stack.region_codes),
                    "target": f"http://127.0.0.1:{targets.port}",
                },
            )
            conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
            conn.execute(SEED_MIX, {"regions": list(stack.region_codes)})
            conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk update: followed now
            conn.execute(RECORD)
            conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
            job = one(
                conn.execute(
                    "SELECT schedule FROM cron.job WHERE jobname = 'pgpulse-tick'"
                ).fetchone()
            )
        print(
            f"  migrated; pg_cron runs pgpulse-tick at '{job['schedule']}'; "
            f"monitors' phases spread them over their intervals",
            flush=True,
        )
        first = run_tick(stack.dsn, trigger="demo")  # pg_cron's first run may be a minute away
        print(
            f"  first tick by hand: {first['jobs_written']} jobs in {first['duration_ms']} ms; "
            "the next ones come from pg_cron",
            flush=True,
        )
        outage = (seconds * 0.35, seconds * 0.35 + min(25.0, seconds * 0.2), stack.region_codes[1])
        with stack.connect(row_factory=dict_row) as conn:
            window = one(
                conn.execute(
                    MAINTENANCE, {"opens": seconds * 0.45, "closes": seconds * 0.7}
                ).fetchone()
            )
        print(
            f"  a tenth of the monitors check from all three regions, a tenth every 10 s; "
            f"maintenance window for {window['monitors']} 'low' monitors "
            f"{window['starts_local']:%H:%M:%S}-{window['ends_local']:%H:%M:%S} Europe/Berlin",
            flush=True,
        )
        away = (seconds * 0.6, seconds * 0.6 + max(25.0, seconds * 0.25), stack.region_codes[2])
        summary = asyncio.run(_live(stack, seconds, outage, window["id"], targets, away))
    print("\nsummary:")
    for key, value in summary.items():
        print(f"  {key:<28} {value}")
    print("everything stopped and removed.")
    return summary
