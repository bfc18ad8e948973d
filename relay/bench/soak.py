"""`pgpulse bench soak`: a steady load for many minutes, to see whether minute 30 looks like
minute 1.

pg_cron ticks (the real job, as pgpulse_ticker) a monitor mix sized to `rate` jobs a second
(intervals 10 s to 5 min, a tenth of the jobs from monitors checked from three regions); a
relay process delivers through the dev server into redis-server; a counting consumer
drains the queues. Every minute it records the tick's duration, jobs delivered, the
delivery lag, CPU per job, the outbox's and the schedule's sizes, dead tuples and
autovacuum runs, WAL and checkpoints, the relay's RSS and Redis's memory. Optionally a
product transaction stays open for some minutes (vacuum held back), then commits.

Exactness is checked per monitor, not per job: the next slot each monitor (and region, for
a multi-region one) must deliver is kept in memory; a job later than that slot means slots
were lost, an earlier one a slot delivered twice, and at the end every slot due by then
must have arrived.

The consumer pops with RPOP straight from redis-server: the reference worker would run an
HTTP check per job (one process does about 400 a second), so at thousands of jobs a second
it would need more CPU than the system it feeds on this machine, and measure itself. RPOP
keeps Redis from filling at a few microseconds a job; the lag it sees is delivery as a
worker would see it (pop time - slot), within its 5 ms poll.

It ends with a table, a plot (PNG) and a verdict: it fails when a slope (CPU per job, the
sizes after the open transaction ended, the relay's RSS) is past its bound (BOUNDS), when
the delivery lag outside the open transaction is past its bound, when a tick was cut short,
or when a slot was lost or doubled.
"""

from __future__ import annotations

import calendar
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from relay.bench import percentile
from relay.bench.e2e import SERVER_SETTINGS, _Components, _stop_relay, _wait_relay_listening
from relay.bench.plot import Panel, chart
from relay.db import one
from relay.delivery.queue import CRITICALITIES, queue_key
from relay.errors import PgPulseError
from relay.local.stack import LocalStack
from relay.queries import queries


class SoakFailed(PgPulseError):
    """The soak ran and a bound did not hold (a slot lost or doubled, a slope too steep)."""


@dataclass(frozen=True)
class MonitorClass:
    """Monitors checked every interval_s from `regions` regions, carrying `share` of the jobs."""

    interval_s: int
    share: float
    regions: int = 1


# The mix: intervals 10 s to 5 min; jobs per second of a class = monitors * regions / interval.
# About 100 monitors per job a second (a million monitors at 10,000 jobs/s).
MIX = (
    MonitorClass(10, 0.10),
    MonitorClass(30, 0.15),
    MonitorClass(60, 0.35),
    MonitorClass(60, 0.10, regions=3),
    MonitorClass(120, 0.10),
    MonitorClass(300, 0.20),
)

# What a steady state must hold. Slopes are least-squares fits over the minutes the bound
# names, projected to an hour; each needs MIN_POINTS minutes to be judged.
BOUNDS = {
    # CPU per job (system: PostgreSQL, relay, dev server, redis-server) may grow by this
    # share of its median in an hour, outside the open transaction and its recovery
    "cpu_per_job_growth_per_hour": 0.30,
    # outbox and schedule (table + indexes) may grow by this share of their mean size in an
    # hour once the open transaction ended and autovacuum caught up (or from the start)
    "size_growth_per_hour": 0.25,
    # ... plus this much, for relation extension steps (PostgreSQL extends a busy table by
    # up to 512 pages at once)
    "size_growth_slack_mb": 8.0,
    # the relay's resident memory, after its first minutes
    "rss_mb_per_hour": 40.0,
    # every minute outside the open transaction and its recovery
    "lag_p99_ms": 250.0,
}
MIN_POINTS = 4
RECOVERY_MINUTES = 3  # after the open transaction: autovacuum catches up, the relay too
RSS_WARMUP_MINUTES = 3  # the relay's first minutes: its caches and pools fill
SAMPLE_S = 60.0
FIRST_SAMPLE_AFTER_S = 90.0  # after the first two ticks: the outbox holds a minute of jobs
SLOT_GRACE_S = 5.0  # at the end: every slot due this long ago must have arrived
ALERT_VACUUM_HELD_S = 60  # the soak's relay alerts on vacuum held back this long

_SENTINEL = 1 << 62  # no slot expected under this key

# Monitor g's id ends in g (12 hex digits), so the consumer finds its slot in an array; the
# rest of the id is random-looking, as product ids are.
_SEED = """
INSERT INTO public.monitors (id, url, check_interval_seconds, preferred_region, check_regions,
                             criticality)
SELECT overlay(md5('soak/' || g) PLACING lpad(to_hex(g), 12, '0') FROM 21)::uuid,
       'https://example.com/health/' || g, %(interval)s,
       CASE WHEN NOT %(multi)s
            THEN (%(regions)s::text[] || ARRAY[NULL])[1 + g %% (cardinality(%(regions)s::text[]) + 1)]
       END,
       CASE WHEN %(multi)s THEN %(regions)s::text[] END,
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4]
  FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
"""

# Every monitor's first slot on its phase grid from the first tick on: nothing is due
# before pg_cron's first tick, so the first slot of each is exactly the one read here.
_RESET = """
UPDATE pgpulse.schedule
   SET next_check_at = pgpulse._grid_slot(monitor_id::text, check_interval_seconds, %(first)s),
       last_scheduled_at = NULL
"""

_SIZES = """
SELECT pg_current_wal_lsn()::text AS lsn, clock_timestamp() AS at,
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints,
       pg_table_size('pgpulse.outbox') AS outbox_table,
       pg_indexes_size('pgpulse.outbox') AS outbox_indexes,
       pg_table_size('pgpulse.schedule') AS schedule_table,
       pg_indexes_size('pgpulse.schedule') AS schedule_indexes
"""

_TABLE_STATS = """
SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, vacuum_count
  FROM pg_stat_user_tables
 WHERE schemaname = 'pgpulse' AND relname IN ('outbox', 'schedule')
"""

_TICKS = """
SELECT count(*) AS ticks,
       max(extract(epoch FROM finished_at - started_at))::float8 AS max_s,
       coalesce(sum(jobs_written), 0) AS jobs_written,
       coalesce(sum(monitors_claimed), 0) AS monitors_claimed,
       coalesce(bool_or(cut_short), false) AS cut_short
  FROM pgpulse.tick_runs
 WHERE trigger = 'pg_cron' AND finished_at > %(since)s AND finished_at <= %(until)s
"""


def plan_mix(rate: float) -> list[dict[str, Any]]:
    """The monitors of each class for `rate` jobs a second, with their id ranges."""
    classes, first = [], 1
    for c in MIX:
        monitors = max(1, round(rate * c.share * c.interval_s / c.regions))
        classes.append(
            {
                "interval_s": c.interval_s,
                "regions": c.regions,
                "monitors": monitors,
                "jobs_per_s": round(monitors * c.regions / c.interval_s, 1),
                "first": first,
                "last": first + monitors - 1,
            }
        )
        first += monitors
    return classes


class Exactness:
    """The next slot (unix microseconds) each monitor must deliver, per region for a
    multi-region monitor (one key for a single-region one: its region is the router's)."""

    def __init__(self, monitors: int, regions: int) -> None:
        self.regions = regions
        self.expected = array("q", [_SENTINEL]) * ((monitors + 1) * regions)
        self.interval_us = array("q", [0]) * (monitors + 1)
        self.multi = bytearray(monitors + 1)
        self.lost = 0
        self.doubled = 0
        self.unexpected = 0
        self.examples: list[str] = []

    def expect(self, index: int, first_slot_us: int, interval_s: int, multi: bool) -> None:
        self.interval_us[index] = interval_s * 1_000_000
        self.multi[index] = multi
        for r in range(self.regions if multi else 1):
            self.expected[index * self.regions + r] = first_slot_us

    def observe(self, index: int, region: int, slot_us: int) -> None:
        if not 0 < index < len(self.interval_us) or not self.interval_us[index]:
            self.unexpected += 1
            self._example(f"a job of unknown monitor #{index}")
            return
        key = index * self.regions + (region if self.multi[index] else 0)
        want, step = self.expected[key], self.interval_us[index]
        if slot_us == want:
            self.expected[key] = want + step
        elif slot_us > want:
            missed = (slot_us - want) // step
            self.lost += missed
            self._example(
                f"monitor #{index} region {region}: {missed} slot(s) lost before {slot_us}"
            )
            self.expected[key] = slot_us + step
        else:
            self.doubled += 1
            self._example(f"monitor #{index} region {region}: slot {slot_us} again or early")

    def late(self, cutoff_us: int) -> int:
        """Keys whose next slot was due by cutoff and has not arrived."""
        return sum(1 for want in self.expected if want <= cutoff_us)

    def caught_up(self, cutoff_us: int) -> bool:
        return min(self.expected) > cutoff_us

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


class _IsoClock:
    """'2026-11-29T19:35:17.250000Z' (as the relay writes scheduled_for) -> unix µs."""

    def __init__(self) -> None:
        self._seconds: dict[str, int] = {}

    def us(self, text: str) -> int:
        head = text[:19]
        seconds = self._seconds.get(head)
        if seconds is None:
            if len(self._seconds) > 10_000:
                self._seconds.clear()
            seconds = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            self._seconds[head] = seconds
        return seconds * 1_000_000 + int(text[20:26])


class Consumer(threading.Thread):
    """Pops every region's queues (oldest first) and checks each job against Exactness."""

    def __init__(self, redis_url: str, dbs: dict[str, int], exactness: Exactness) -> None:
        super().__init__(name="soak-consumer", daemon=True)
        self.redis_url, self.dbs, self.exactness = redis_url, dbs, exactness
        self.region_index = {code: i for i, code in enumerate(dbs)}
        self.lags: list[float] = []  # seconds, since the last take_minute()
        self.jobs = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._clock = _IsoClock()

    def take_minute(self) -> tuple[int, list[float]]:
        jobs, self.jobs = self.jobs, 0
        lags, self.lags = self.lags, []
        return jobs, lags

    def run(self) -> None:
        try:
            clients = {
                code: redis.Redis.from_url(self.redis_url, db=db) for code, db in self.dbs.items()
            }
            keys = {code: [queue_key(code, c) for c in CRITICALITIES] for code in self.dbs}
            while not self.stopping.is_set():
                got = 0
                for code, client in clients.items():
                    pipe = client.pipeline(transaction=False)
                    for key in keys[code]:
                        pipe.rpop(key, 1000)
                    for batch in pipe.execute():
                        if batch:
                            got += len(batch)
                            self._take(batch)
                if not got:
                    self.stopping.wait(0.005)
        except BaseException as exc:  # the main thread reports it
            self.error = exc

    def _take(self, batch: list[bytes]) -> None:
        now_us = time.time_ns() // 1000
        exactness, region_index, clock = self.exactness, self.region_index, self._clock
        lags = self.lags
        for raw in batch:
            job = json.loads(raw)
            slot_us = clock.us(job["scheduled_for"])
            exactness.observe(
                int(job["monitor_id"][-12:], 16), region_index.get(job["region"], -1), slot_us
            )
            lags.append((now_us - slot_us) / 1e6)
        self.jobs += len(batch)


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None for fewer than MIN_POINTS points."""
    if len(points) < MIN_POINTS:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def windows(minutes: int, hold: tuple[int, int] | None) -> dict[str, list[int]]:
    """Which minutes each bound judges (minute k ends at sample k): `steady` leaves out the
    open transaction and the recovery after it; `settled` is the end of the run once that
    recovery is over (the whole run when nothing is held), `after_hold` the same as sample
    indexes (levels, from the sample that starts it); `rss` the settled minutes after the
    relay's warm-up."""
    held = set()
    if hold:
        held = set(range(hold[0] + 1, min(minutes, hold[1] + RECOVERY_MINUTES) + 1))
    steady = [k for k in range(1, minutes + 1) if k not in held]
    after = hold[1] + RECOVERY_MINUTES if hold else 0
    settled = list(range(after + 1, minutes + 1))
    return {
        "steady": steady,
        "settled": settled,
        "after_hold": list(range(after, minutes + 1)),
        "rss": [k for k in settled if k > RSS_WARMUP_MINUTES],
    }


def _per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    slope = _slope(points)
    return None if slope is None else round(slope * 60, 3)


def figures(record: dict[str, Any]) -> dict[str, Any]:
    """What the run shows besides its verdict: fitted slopes per hour over the settled
    minutes (levels: from the sample that starts them), and with an open transaction, what
    it left behind: medians before it and after its recovery."""
    rows, levels = record["per_minute"], record["levels"]
    hold = record["hold_open"]
    w = windows(len(rows), (hold["from_minute"], hold["to_minute"]) if hold else None)

    def minutes(key: str, which: list[int]) -> list[tuple[float, float]]:
        return [(k, rows[k - 1][key]) for k in which if rows[k - 1]["jobs"]]

    def samples(key: str, which: list[int]) -> list[tuple[float, float]]:
        return [(k, levels[k][key]) for k in which]

    slopes = {
        f"{key}_per_hour": _per_hour(minutes(key, w["settled"]))
        for key in ("tick_max_s", "lag_p99_ms", "cpu_us_per_job", "wal_mb")
    } | {
        f"{key}_per_hour": _per_hour(samples(key, w["after_hold"]))
        for key in ("outbox_mb", "schedule_mb", "relay_rss_mb", "redis_mb")
    }
    result: dict[str, Any] = {"slopes": slopes}
    if hold:
        before = [k for k in w["steady"] if k <= hold["from_minute"]]

        def median(values: list[float]) -> float | None:
            return round(statistics.median(values), 1) if values else None

        result["hold_left"] = {
            key: {
                "before": median([rows[k - 1][key] for k in before]),
                "during_max": max((rows[k - 1][key] for k in range(
                    hold["from_minute"] + 1, hold["to_minute"] + 1)), default=None),
                "after": median([rows[k - 1][key] for k in w["settled"]]),
            }
            for key in ("tick_max_s", "lag_p99_ms", "cpu_us_per_job")
        } | {
            key: {
                "before": levels[hold["from_minute"]][key],
                "during_max": max(level[key] for level in levels),
                "after": median([levels[k][key] for k in w["after_hold"]]),
            }
            for key in ("outbox_mb", "schedule_mb")
        }  # fmt: skip
    return result


def judge(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bound with its value and whether it held (None: too few minutes to judge)."""
    rows, levels = record["per_minute"], record["levels"]
    hold = record["hold_open"]
    w = windows(len(rows), (hold["from_minute"], hold["to_minute"]) if hold else None)
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, bound: float, unit: str, what: str) -> None:
        checks.append(
            {
                "name": name,
                "value": None if value is None else round(value, 3),
                "bound": round(bound, 3),
                "unit": unit,
                "ok": None if value is None else value <= bound,
                "what": what,
            }
        )

    outside = "outside the open transaction and its recovery" if hold else "of the run"
    ex = record["exactness"]
    check("slots_lost", ex["lost"] + ex["late_at_end"], 0, "slots", "no slot lost")
    check("slots_doubled", ex["doubled"] + ex["unexpected"], 0, "slots", "no slot twice")
    steady = [rows[k - 1] for k in w["steady"]]
    check(
        "ticks_cut_short",
        sum(1 for r in steady if r["tick_cut_short"]),
        0,
        "ticks",
        f"no tick ran out of its budget {outside}",
    )
    lag = max((r["lag_p99_ms"] for r in steady if r["jobs"]), default=None)
    check(
        "lag_p99_ms",
        lag,
        BOUNDS["lag_p99_ms"],
        "ms",
        f"delivery lag p99 of every minute {outside}",
    )
    cpu = [(k, rows[k - 1]["cpu_us_per_job"]) for k in w["settled"] if rows[k - 1]["jobs"]]
    slope = _slope(cpu)
    median = statistics.median(v for _, v in cpu) if cpu else 0
    check(
        "cpu_per_job_growth_per_hour",
        None if slope is None else slope * 60 / median,
        BOUNDS["cpu_per_job_growth_per_hour"],
        "share",
        "CPU per job: fitted growth in an hour, a share of its median"
        + (", after the open transaction's recovery" if hold else ""),
    )
    for table in ("outbox", "schedule"):
        points = [(k, levels[k][f"{table}_mb"]) for k in w["after_hold"]]
        slope = _slope(points)
        mean = statistics.fmean(v for _, v in points) if points else 0
        allowed = BOUNDS["size_growth_per_hour"] * mean + BOUNDS["size_growth_slack_mb"]
        check(
            f"{table}_growth_mb_per_hour",
            None if slope is None else slope * 60,
            allowed,
            "MB",
            f"{table} table + indexes: fitted growth in an hour "
            f"({BOUNDS['size_growth_per_hour']:.0%} of its mean + "
            f"{BOUNDS['size_growth_slack_mb']:g} MB)"
            + (", after the open transaction's recovery" if hold else ""),
        )
    slope = _slope([(k, levels[k]["relay_rss_mb"]) for k in w["rss"]])
    check(
        "relay_rss_mb_per_hour",
        None if slope is None else slope * 60,
        BOUNDS["rss_mb_per_hour"],
        "MB",
        f"the relay's RSS: fitted growth in an hour, after minute {RSS_WARMUP_MINUTES}"
        + (" and the open transaction's recovery" if hold else ""),
    )
    if hold:
        check(
            "vacuum_alert",
            0 if record["vacuum_alert_fired"] else 1,
            0,
            "",
            f"the relay alerted on vacuum held back ({ALERT_VACUUM_HELD_S} s) while the "
            "transaction was open",
        )
    return checks


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Sampler:
    """Reads the levels (sizes, counters) at each minute's end and the minute's deltas."""

    def __init__(self, stack: LocalStack, conn, relay_pid: int, consumer: Consumer) -> None:
        self.conn, self.relay_pid, self.consumer = conn, relay_pid, consumer
        self.components = _Components(stack, relay_pid)
        self.redis = redis.Redis.from_url(stack.redis.url)
        self.previous: dict[str, Any] | None = None

    def close(self) -> None:
        self.redis.close()

    def levels(self) -> dict[str, Any]:
        cur = self.conn.cursor(row_factory=dict_row)
        sizes = one(cur.execute(_SIZES).fetchone())
        stats = {r["relname"]: r for r in cur.execute(_TABLE_STATS).fetchall()}
        horizon = cur.execute(queries()["vacuum_horizon"]).fetchone()
        mb = 1 / (1 << 20)
        return {
            "at": sizes["at"],
            "lsn": sizes["lsn"],
            "checkpoints": sizes["checkpoints"],
            "outbox_table_mb": round(sizes["outbox_table"] * mb, 2),
            "outbox_indexes_mb": round(sizes["outbox_indexes"] * mb, 2),
            "outbox_mb": round((sizes["outbox_table"] + sizes["outbox_indexes"]) * mb, 2),
            "schedule_table_mb": round(sizes["schedule_table"] * mb, 2),
            "schedule_indexes_mb": round(sizes["schedule_indexes"] * mb, 2),
            "schedule_mb": round((sizes["schedule_table"] + sizes["schedule_indexes"]) * mb, 2),
            "outbox_live": stats["outbox"]["n_live_tup"],
            "outbox_dead": stats["outbox"]["n_dead_tup"],
            "schedule_dead": stats["schedule"]["n_dead_tup"],
            "outbox_autovacuums": stats["outbox"]["autovacuum_count"],
            "schedule_autovacuums": stats["schedule"]["autovacuum_count"],
            "horizon_held_s": horizon["held_s"] if horizon else None,
            "horizon_xid_age": horizon["xid_age"] if horizon else None,
            "relay_rss_mb": round(_proc_rss_mb(self.relay_pid), 1),
            "redis_mb": round(self.redis.info("memory")["used_memory"] * mb, 1),
            "cpu": self.components.sample() | {"consumer": time.process_time()},
        }

    def minute(self, held: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """The minute since the previous call: its row, and the levels at its end."""
        jobs, lags = self.consumer.take_minute()
        now = self.levels()
        before = self.previous
        assert before is not None, "levels() was read at the start"
        self.previous = now
        ticks = one(
            self.conn.cursor(row_factory=dict_row)
            .execute(_TICKS, {"since": before["at"], "until": now["at"]})
            .fetchone()
        )
        wal = one(
            self.conn.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (now["lsn"], before["lsn"])
            ).fetchone()
        )[0]
        cpu = {name: now["cpu"][name] - before["cpu"][name] for name in now["cpu"]}
        system = sum(v for name, v in cpu.items() if name != "consumer")
        per_job = 1e6 / jobs if jobs else 0.0
        row = {
            "jobs": jobs,
            "jobs_written": int(ticks["jobs_written"]),
            "monitors_claimed": int(ticks["monitors_claimed"]),
            "ticks": ticks["ticks"],
            "tick_max_s": round(ticks["max_s"] or 0.0, 3),
            "tick_cut_short": ticks["cut_short"],
            "lag_p50_ms": round(percentile(lags, 0.50) * 1000, 1),
            "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
            "lag_max_ms": round(max(lags, default=0.0) * 1000, 1),
            "cpu_us_per_job": round(system * per_job, 1),
            "cpu_us_per_job_by": {name: round(v * per_job, 1) for name, v in cpu.items()},
            "wal_mb": round(float(wal) / (1 << 20), 1),
            "checkpoints": now["checkpoints"] - before["checkpoints"],
            "outbox_autovacuums": now["outbox_autovacuums"] - before["outbox_autovacuums"],
            "schedule_autovacuums": now["schedule_autovacuums"] - before["schedule_autovacuums"],
            "held": held,
            "load_1m": round(os.getloadavg()[0], 2),
        }
        return row, now


def _pause_cron(conn) -> None:
    """pg_cron's tick job stops (it stays installed as migrate left it); no tick ran: new
    monitors are not scheduled at once (pgpulse._written_ahead_to)."""
    conn.execute(
        "SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname = 'pgpulse-tick'"
    )
    conn.execute("DELETE FROM pgpulse.tick_runs")


def _resume_cron(conn) -> None:
    (jobs,) = conn.execute(
        "SELECT count(cron.alter_job(jobid, active => true)) FROM cron.job"
        " WHERE jobname = 'pgpulse-tick' AND username = 'pgpulse_ticker'"
    ).fetchone()
    if jobs != 1:
        raise SoakFailed("pg_cron has no pgpulse-tick job running as pgpulse_ticker")


def _seed(conn, classes: list[dict[str, Any]], regions: list[str]) -> None:
    conn.execute("CREATE TABLE public.soak_orders (id bigint, placed_at timestamptz)")
    for c in classes:
        conn.execute(
            _SEED,
            {
                "interval": c["interval_s"],
                "multi": c["regions"] > 1,
                "regions": regions,
                "first": c["first"],
                "last": c["last"],
            },
        )
    # bulk writes are logged for the relay and the tick to follow: followed here, at once
    while one(conn.execute("SELECT pgpulse.follow_apply(1000000)").fetchone())[0]:
        pass


def _load_exactness(conn, monitors: int, regions: int) -> Exactness:
    exactness = Exactness(monitors, regions)
    with conn.transaction(), conn.cursor(name="soak_schedule") as cur:
        cur.itersize = 20_000
        cur.execute(
            "SELECT right(monitor_id::text, 12), "
            "       (extract(epoch FROM next_check_at) * 1000000)::bigint,"
            "       check_interval_seconds, check_regions IS NOT NULL"
            "  FROM pgpulse.schedule WHERE is_active AND parked IS NULL"
        )
        loaded = 0
        for index_hex, first_us, interval_s, multi in cur:
            exactness.expect(int(index_hex, 16), first_us, interval_s, multi)
            loaded += 1
    if loaded != monitors:
        raise SoakFailed(f"{loaded} of {monitors} monitors are scheduled")
    return exactness


def _start_relay(stack: LocalStack, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        **stack.env(),
        "PGPULSE_LOG_LEVEL": "WARNING",
        "PGPULSE_ALERT_VACUUM_HELD_S": str(ALERT_VACUUM_HELD_S),
    }
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "relay"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _vacuum_alert_fired(log: Path) -> bool:
    for line in log.read_text(errors="replace").splitlines():
        if '"alert_firing"' in line and '"vacuum_held_back"' in line:
            return True
    return False


def _wait_until(at: float, *, relay: subprocess.Popen, consumer: Consumer) -> None:
    """Until unix time `at`, failing at once when the relay or the consumer died."""
    while (left := at - time.time()) > 0:
        if relay.poll() is not None:
            raise SoakFailed(f"the relay exited with {relay.returncode}")
        if consumer.error is not None:
            raise SoakFailed(f"the consumer failed: {consumer.error!r}")
        time.sleep(min(left, 0.5))


def bench_soak(
    rate: float = 2000,
    minutes: int = 10,
    *,
    hold_open_at: int | None = None,
    hold_open_minutes: int = 5,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs the soak; returns its record (per minute rows, levels, checks). Writes
    soak.json, soak.txt, soak.png and the relay's log into `out`; `progress` gets a line
    per minute."""
    say = progress or (lambda line: None)
    if rate <= 0 or minutes < 1:
        raise SoakFailed("rate must be > 0 and minutes >= 1")
    hold = None
    if hold_open_at is not None:
        if hold_open_at < 0 or hold_open_minutes < 1 or hold_open_at >= minutes:
            raise SoakFailed("--hold-open-at must be a minute of the run, and its minutes >= 1")
        hold = (hold_open_at, min(minutes, hold_open_at + hold_open_minutes))
    out = Path(out or f"soak-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    classes = plan_mix(rate)
    monitors = classes[-1]["last"]
    relay_log = out / "relay.log"
    relay_log.unlink(missing_ok=True)
    setup_started = time.monotonic()
    with LocalStack(pg_cron=True, pg_settings=SERVER_SETTINGS) as stack:
        regions = list(stack.region_codes)
        with stack.connect() as conn:
            _pause_cron(conn)
            stack.create_regions(conn)
            _seed(conn, classes, regions)
            conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
            # the first tick: a minute boundary far enough ahead for the rest of the setup
            margin_s = 15 + monitors / 10_000
            first_tick = one(
                conn.execute(
                    "SELECT date_trunc('minute', now() + make_interval(secs => %s))"
                    " + interval '1 minute'",
                    (margin_s,),
                ).fetchone()
            )[0]
            conn.execute(_RESET, {"first": first_tick + timedelta(seconds=2)})
            conn.execute("VACUUM ANALYZE pgpulse.schedule")
            exactness = _load_exactness(conn, monitors, len(regions))
            consumer = Consumer(
                stack.redis.url, {code: stack.redis_db(code) for code in regions}, exactness
            )
            relay = _start_relay(stack, relay_log)
            product = None
            try:
                _wait_relay_listening(conn, relay)
                consumer.start()
                _resume_cron(conn)
                if time.time() > first_tick.timestamp() - 1:
                    raise SoakFailed("the setup took longer than planned: the first tick passed")
                setup_s = time.monotonic() - setup_started
                say(
                    f"soak: {monitors} monitors seeded in {setup_s:.0f} s; pg_cron's first tick "
                    f"at {first_tick:%H:%M:%S}, measuring from 90 s later for {minutes} minutes"
                )
                t0 = first_tick.timestamp() + FIRST_SAMPLE_AFTER_S
                sampler = _Sampler(stack, conn, relay.pid, consumer)
                _wait_until(t0, relay=relay, consumer=consumer)
                consumer.take_minute()  # the warm-up's jobs are not a minute's
                start = sampler.levels()
                sampler.previous = start
                levels, rows = [start], []
                for k in range(1, minutes + 1):
                    if hold and k - 1 == hold[0]:
                        product = psycopg.connect(stack.dsn)
                        product.execute("INSERT INTO public.soak_orders VALUES (1, now())")
                    _wait_until(t0 + k * SAMPLE_S, relay=relay, consumer=consumer)
                    row, level = sampler.minute(held=product is not None)
                    rows.append({"minute": k, **row})
                    levels.append(level)
                    say(
                        f"soak minute {k}/{minutes}{' (transaction open)' if row['held'] else ''}"
                        f": {row['jobs']} jobs, lag p99 {row['lag_p99_ms']:.0f} ms, tick "
                        f"{row['tick_max_s']:.1f} s, {row['cpu_us_per_job']:.0f} µs/job, outbox "
                        f"{level['outbox_mb']:.0f} MB, schedule {level['schedule_mb']:.0f} MB, "
                        f"{exactness.lost} lost, {exactness.doubled} doubled"
                    )
                    if hold and k == hold[1] and product is not None:
                        product.commit()
                        product.close()
                        product = None
                cutoff_us = int((t0 + minutes * SAMPLE_S - SLOT_GRACE_S) * 1e6)
                deadline = time.monotonic() + 30
                while not exactness.caught_up(cutoff_us) and time.monotonic() < deadline:
                    time.sleep(0.2)
                sampler.close()
            finally:
                consumer.stopping.set()
                consumer.join(10)
                _stop_relay(relay)
                if product is not None:
                    product.close()
            if consumer.error is not None:
                raise SoakFailed(f"the consumer failed: {consumer.error!r}")
    record = {
        "bench": "soak",
        "rate_per_s": rate,
        "minutes": minutes,
        "monitors": monitors,
        "regions": len(regions),
        "mix": [{k: v for k, v in c.items() if k not in ("first", "last")} for c in classes],
        "consumer": "RPOP from redis-server (counting consumer; see relay/bench/soak.py)",
        "hold_open": {"from_minute": hold[0], "to_minute": hold[1]} if hold else None,
        "setup_s": round(setup_s, 1),
        "exactness": {
            "lost": exactness.lost,
            "doubled": exactness.doubled,
            "unexpected": exactness.unexpected,
            "late_at_end": exactness.late(cutoff_us),
            "examples": exactness.examples,
        },
        "vacuum_alert_fired": _vacuum_alert_fired(relay_log),
        "bounds": BOUNDS,
        "per_minute": rows,
        "levels": [
            {k: v for k, v in level.items() if k not in ("cpu", "lsn", "at")} for level in levels
        ],  # fmt: skip
        "out": str(out),
    }
    record |= figures(record)
    record["checks"] = judge(record)
    record["passed"] = all(c["ok"] is not False for c in record["checks"])
    (out / "soak.json").write_text(json.dumps(record, indent=2, default=str))
    (out / "soak.txt").write_text(render_table(record) + "\n")
    (out / "soak.png").write_bytes(plot(record))
    return record


def failures(record: dict[str, Any]) -> list[str]:
    return [
        f"{c['name']} {c['value']} > {c['bound']} {c['unit']}".rstrip()
        for c in record["checks"]
        if c["ok"] is False
    ]


_COLUMNS = (
    ("min", "minute", "{}"),
    ("tick s", "tick_max_s", "{:.2f}"),
    ("jobs", "jobs", "{}"),
    ("lag p50", "lag_p50_ms", "{:.0f}"),
    ("lag p99", "lag_p99_ms", "{:.0f}"),
    ("µs/job", "cpu_us_per_job", "{:.1f}"),
    ("outbox MB", "outbox_mb", "{:.1f}"),
    ("sched MB", "schedule_mb", "{:.1f}"),
    ("dead outbox", "outbox_dead", "{}"),
    ("dead sched", "schedule_dead", "{}"),
    ("av o/s", "autovacuums", "{}"),
    ("WAL MB", "wal_mb", "{:.0f}"),
    ("ckpt", "checkpoints", "{}"),
    ("RSS MB", "relay_rss_mb", "{:.0f}"),
    ("redis MB", "redis_mb", "{:.0f}"),
    ("held s", "horizon_held_s", "{:.0f}"),
    ("load", "load_1m", "{:.1f}"),
)


def render_table(record: dict[str, Any]) -> str:
    """The per-minute table, the checks and the verdict, as text."""
    lines = [
        f"pgpulse bench soak: {record['rate_per_s']:g} jobs/s, {record['monitors']} monitors, "
        f"{record['minutes']} minutes"
        + (
            f", a product transaction open in minutes {record['hold_open']['from_minute'] + 1}"
            f"-{record['hold_open']['to_minute']}"
            if record["hold_open"]
            else ""
        ),
    ]
    table = []
    for row, level in zip(record["per_minute"], record["levels"][1:]):
        merged = row | level | {"autovacuums": f"{row['outbox_autovacuums']}/"
                                               f"{row['schedule_autovacuums']}"}  # fmt: skip
        cells = []
        for _, key, fmt in _COLUMNS:
            value = merged.get(key)
            cells.append("-" if value is None else fmt.format(value))
        if row["held"]:
            cells[0] += "*"
        table.append(cells)
    heads = [head for head, _, _ in _COLUMNS]
    widths = [max([len(h), *(len(r[i]) for r in table)]) for i, h in enumerate(heads)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(heads, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    if record["hold_open"]:
        lines.append("* a product transaction was open (vacuum held back)")
    ex = record["exactness"]
    lines.append(
        f"exactness: {ex['lost']} slots lost, {ex['doubled']} doubled, {ex['unexpected']} "
        f"unexpected, {ex['late_at_end']} missing at the end"
    )
    slopes = record.get("slopes") or {}
    if slopes:
        lines.append(
            "fitted per hour, settled minutes: "
            + ", ".join(
                f"{key.removesuffix('_per_hour')} {value:+g}"
                for key, value in slopes.items()
                if value is not None
            )
        )
    for key, seen in (record.get("hold_left") or {}).items():
        lines.append(
            f"open transaction: {key} {seen['before']} before, up to {seen['during_max']}, "
            f"{seen['after']} after"
        )
    for c in record["checks"]:
        verdict = {True: "ok", False: "FAIL", None: "not judged (too few minutes)"}[c["ok"]]
        value = "-" if c["value"] is None else c["value"]
        lines.append(f"  {verdict:>4}  {c['name']}: {value} (bound {c['bound']}) {c['what']}")
    lines.append(f"verdict: {'PASS' if record['passed'] else 'FAIL'}; files in {record['out']}")
    return "\n".join(lines)


def plot(record: dict[str, Any]) -> bytes:
    """Per-minute values at their minute's end (1..M), levels at each minute's end (0..M)."""
    rows, levels = record["per_minute"], record["levels"]
    x = [float(r["minute"]) for r in rows]
    lx = [float(k) for k in range(len(levels))]

    def col(key: str) -> list[float | None]:
        return [r.get(key) for r in rows]

    def lev(key: str) -> list[float | None]:
        return [level.get(key) for level in levels]

    def by(component: str) -> list[float | None]:
        return [r["cpu_us_per_job_by"].get(component) for r in rows]

    panels = [
        Panel("tick duration", x, [("longest", col("tick_max_s"))], "s"),
        Panel(
            "delivery lag",
            x,
            [("p50", col("lag_p50_ms")), ("p99", col("lag_p99_ms"))],
            "ms",
            bounds=[BOUNDS["lag_p99_ms"]],
        ),
        Panel(
            "CPU per job",
            x,
            [
                ("system", col("cpu_us_per_job")),
                ("postgres", by("postgres")),
                ("relay", by("relay")),
            ],
            "us",
        ),  # fmt: skip
        Panel("WAL per minute", x, [("WAL", col("wal_mb"))], "MB"),
        Panel(
            "outbox size",
            lx,
            [("table", lev("outbox_table_mb")), ("indexes", lev("outbox_indexes_mb"))],
            "MB",
        ),
        Panel(
            "schedule size",
            lx,
            [("table", lev("schedule_table_mb")), ("indexes", lev("schedule_indexes_mb"))],
            "MB",
        ),
        Panel(
            "dead tuples",
            lx,
            [("outbox", lev("outbox_dead")), ("schedule", lev("schedule_dead"))],
        ),
        Panel("memory", lx, [("relay RSS", lev("relay_rss_mb")), ("redis", lev("redis_mb"))], "MB"),
    ]
    hold = record["hold_open"]
    title = f"pgpulse soak: {record['rate_per_s']:g} jobs/s, {record['monitors']} monitors" + (
        ", shaded: a product transaction open" if hold else ""
    )
    shade = (hold["from_minute"], hold["to_minute"]) if hold else None
    return chart(title, panels, shade=shade, x_label="minutes")
