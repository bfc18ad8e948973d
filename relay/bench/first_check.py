"""`pgpulse bench first-check`: a new monitor's first check on time, under pg_cron.

N monitors (one check a minute, spread over their phases) on a throwaway stack where pg_cron
runs the real `pgpulse-tick` job every minute and a relay process publishes. One tick by
hand starts the run (pg_cron's first one may be a minute away); then, for each run (one
minute, so each holds one pg_cron tick), monitors are created, re-activated and re-phased at
random moments. A job counts as published when redis-server runs the push script's LPUSH,
by redis-server's own clock (MONITOR), so the figure is what a regional worker sees.

Reported: the lateness (published - slot) of the first slot of each of those monitors, and
for every job whose slot lies in the runs the share published within 50 ms and 250 ms of it.
Every job is checked: each (monitor, region, slot) pushed once, every slot of the minute
monitors in the runs there, every slot of a changed monitor from its first one on; Redis
holds as many jobs as the capture saw. The run fails otherwise."""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import psycopg

from relay.bench import percentile
from relay.bench.e2e import _start_relay, _stop_relay, _wait_relay_listening
from relay.bench.relay import queued_jobs
from relay.db import one
from relay.local.stack import LocalStack

RUN_SECONDS = 60  # one run: one pg_cron minute
EVENTS_PER_RUN = 60  # a third each: created, re-activated, re-phased
EVENT_INTERVALS = (10, 15, 20)  # seconds: every first slot lies within 20 s of its event
STEADY_INTERVAL = 60
SETTLE_SECONDS = 30  # after the last slot: the longest wait for the last pushes

# Monitors checked every minute, spread over their phases (next_check_at from the id's hash).
_SEED_STEADY = """
INSERT INTO public.monitors (url, check_interval_seconds, preferred_region, criticality)
SELECT 'https://example.com/steady/' || g, %(interval)s,
       (%(regions)s::text[])[1 + g %% cardinality(%(regions)s::text[])],
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4]
  FROM generate_series(1, %(n)s) g
RETURNING id::text
"""

# Monitors switched off long ago, to be re-activated during the runs.
_SEED_INACTIVE = """
INSERT INTO public.monitors (url, check_interval_seconds, is_active, next_check_at)
SELECT 'https://example.com/paused/' || g, (%(intervals)s::int[])[1 + g %% 3], false,
       now() - interval '3 hours'
  FROM generate_series(1, %(n)s) g
RETURNING id::text
"""

# Each returns the monitor's first slot: the next one on its phase grid from the statement's
# time, as pgpulse's triggers place it (pgpulse.schedule holds it; the product's
# next_check_at is not written, and by the time the statement returns the slot may already
# have been written to the outbox and the schedule moved past it).
_CREATE = """
INSERT INTO public.monitors (url, check_interval_seconds)
VALUES (%(url)s, %(interval)s)
RETURNING id::text, pgpulse.next_slot(id, check_interval_seconds, now()), check_interval_seconds
"""

_REACTIVATE = """
UPDATE public.monitors SET is_active = true WHERE id = %(id)s
RETURNING id::text, pgpulse.next_slot(id, check_interval_seconds, now()), check_interval_seconds
"""

_REPHASE = """
UPDATE public.monitors SET check_interval_seconds = %(interval)s WHERE id = %(id)s
RETURNING id::text, pgpulse.next_slot(id, check_interval_seconds, now()), check_interval_seconds
"""

# The first run of the stack is a tick by hand, exactly as pg_cron's job calls it.
_TICK = "CALL pgpulse.tick(p_trigger => 'bench')"

_FIELD = {
    name: re.compile(rb'\\"' + name.encode() + rb'\\": ?\\"([^\\"]+)\\"')
    for name in ("job_id", "monitor_id", "region", "scheduled_for")
}
# one argument of a MONITOR line: quoted, with backslash escapes inside
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


@dataclass(frozen=True, slots=True)
class Push:
    """One LPUSH of the push script, as redis-server ran it."""

    at_us: int  # redis-server's clock
    job_id: str
    monitor_id: str
    region: str
    slot_us: int  # the job's scheduled_for

    @property
    def late_ms(self) -> float:
        return (self.at_us - self.slot_us) / 1000


class PushCapture:
    """Reads redis-server's MONITOR stream on a thread and keeps each job an LPUSH run by a
    script pushed (the push script's, `[db lua] "LPUSH" key json ...`) with redis-server's
    timestamp."""

    def __init__(self, redis_url: str) -> None:
        url = urlparse(redis_url)
        self._address = (url.hostname or "127.0.0.1", url.port or 6379)
        self.pushes: list[Push] = []
        self.undone = 0  # DELs: markers the script took back (their push failed)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PushCapture:
        self._sock = socket.create_connection(self._address, timeout=10)
        self._sock.sendall(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += self._sock.recv(64)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"redis-server refused MONITOR: {reply!r}")
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name="push-capture", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def snapshot(self) -> list[Push]:
        with self._lock:
            return list(self.pushes)

    def _read(self) -> None:
        rest = b""
        assert self._sock is not None  # opened before this thread starts
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            lines = (rest + data).split(b"\r\n")
            rest = lines.pop()
            parsed = []
            for line in lines:
                if b' lua] "LPUSH" ' in line:
                    parsed.extend(self._parse(line))
                elif b' lua] "DEL" ' in line:
                    self.undone += 1
            if parsed:
                with self._lock:
                    self.pushes.extend(parsed)

    @staticmethod
    def _parse(line: bytes) -> list[Push]:
        # +1796012558.002777 [1 lua] "LPUSH" "pgpulse:jobs:..." "{\"v\": 1, ...}" "{...}"
        at = line[1 : line.index(b" ")]
        seconds, _, fraction = at.partition(b".")
        at_us = int(seconds) * 1_000_000 + int(fraction.ljust(6, b"0"))
        _, _key, *values = _QUOTED.findall(line[line.index(b'"LPUSH"') :])
        pushes = []
        for value in values:
            fields = {
                name: pattern.search(value).group(1).decode()  # type: ignore[union-attr]  # job JSON
                for name, pattern in _FIELD.items()
            }
            pushes.append(
                Push(
                    at_us=at_us,
                    job_id=fields["job_id"],
                    monitor_id=fields["monitor_id"],
                    region=fields["region"],
                    slot_us=_micros(datetime.fromisoformat(fields["scheduled_for"])),
                )
            )
        return pushes


@dataclass
class Event:
    """A monitor created, re-activated or re-phased; its first slot and interval."""

    kind: str
    run: int
    monitor_id: str
    first_slot_us: int
    interval_s: int


def _event_plan(runs: int, rng: random.Random) -> list[tuple[float, str, int]]:
    """(seconds after the runs' start, kind, run): uniform moments within each run."""
    kinds = ["created", "reactivated", "rephased"] * (EVENTS_PER_RUN // 3)
    plan = []
    for run in range(runs):
        rng.shuffle(kinds)
        moments = sorted(rng.uniform(0, RUN_SECONDS) for _ in kinds)
        plan += [(run * RUN_SECONDS + at, kind, run) for at, kind in zip(moments, kinds)]
    return plan


def _do_event(
    conn: psycopg.Connection,
    kind: str,
    run: int,
    rng: random.Random,
    paused: list[str],
    steady: list[str],
    touched: set[str],
) -> Event:
    if kind == "created":
        sql, params = (
            _CREATE,
            {
                "url": f"https://example.com/new/{len(touched)}",
                "interval": rng.choice(EVENT_INTERVALS),
            },
        )
    elif kind == "reactivated":
        sql, params = _REACTIVATE, {"id": paused.pop()}
    else:
        while (monitor := rng.choice(steady)) in touched:
            pass
        sql, params = _REPHASE, {"id": monitor, "interval": rng.choice(EVENT_INTERVALS)}
    monitor_id, first_slot, interval_s = one(conn.execute(sql, params).fetchone())
    touched.add(monitor_id)
    return Event(kind, run, monitor_id, _micros(first_slot), interval_s)


def _missing(
    pushes: list[Push], events: list[Event], steady: list[str], start_us: int, end_us: int
) -> list[str]:
    """What should be in the queues by now and is not: every slot in [start, end) of each
    untouched minute monitor, and each changed monitor's slots from its first one to end."""
    slots: dict[str, set[int]] = {}
    for push in pushes:
        slots.setdefault(push.monitor_id, set()).add(push.slot_us)
    touched = {e.monitor_id for e in events}
    step = STEADY_INTERVAL * 1_000_000
    missing = []
    for monitor in steady:
        if monitor in touched:
            continue
        got = sorted(s for s in slots.get(monitor, ()) if start_us <= s < end_us)
        whole = (
            got
            and got[0] < start_us + step
            and got[-1] >= end_us - step
            and all(b - a == step for a, b in zip(got, got[1:]))
        )
        if not whole:
            missing.append(f"minute monitor {monitor}: slots {got}")
    for event in events:
        step_e = event.interval_s * 1_000_000
        want = range(event.first_slot_us, max(end_us, event.first_slot_us + 1), step_e)
        lost = set(want) - slots.get(event.monitor_id, set())
        if lost:
            missing.append(
                f"{event.kind} monitor {event.monitor_id}: {len(lost)} slots, first {min(lost)}"
            )
    return missing


def _check_once(pushes: list[Push]) -> None:
    jobs = {p.job_id for p in pushes}
    slots = {(p.monitor_id, p.region, p.slot_us) for p in pushes}
    if len(jobs) != len(pushes) or len(slots) != len(pushes):
        raise RuntimeError(
            f"{len(pushes)} pushes but {len(jobs)} distinct jobs and "
            f"{len(slots)} distinct (monitor, region, slot)"
        )


def _first_job_late_ms(pushes: list[Push], events: list[Event]) -> dict[str, float]:
    """Per changed monitor: when its first job on its new grid arrived, after the slot it
    was first due at (that slot's own job, or a later one should that slot be skipped)."""
    first_arrival: dict[str, int] = {}
    grid = {e.monitor_id: (e.first_slot_us, e.interval_s * 1_000_000) for e in events}
    for push in pushes:
        if push.monitor_id in grid:
            first_slot, step = grid[push.monitor_id]
            if push.slot_us >= first_slot and (push.slot_us - first_slot) % step == 0:
                first_arrival[push.monitor_id] = min(
                    push.at_us, first_arrival.get(push.monitor_id, push.at_us)
                )
    return {e.monitor_id: (first_arrival[e.monitor_id] - e.first_slot_us) / 1000 for e in events}


def _late_figures(late_ms: list[float], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(percentile(late_ms, 0.50), 1),
        f"{prefix}_p99_ms": round(percentile(late_ms, 0.99), 1),
        f"{prefix}_max_ms": round(max(late_ms, default=0.0), 1),
    }


def _share(late_ms: list[float], within_ms: float) -> float:
    return round(100 * sum(1 for late in late_ms if late <= within_ms) / max(len(late_ms), 1), 2)


def _cron_ticks(conn: psycopg.Connection, start_us: int, end_us: int) -> dict[str, Any]:
    count, slowest, cut = one(
        conn.execute(
            "SELECT count(*), max(extract(epoch FROM finished_at - started_at)),"
            "       count(*) FILTER (WHERE cut_short)"
            "  FROM pgpulse.tick_runs WHERE trigger = 'pg_cron'"
            "   AND started_at >= to_timestamp(%s / 1e6) AND started_at < to_timestamp(%s / 1e6)",
            (start_us, end_us),
        ).fetchone()
    )
    return {
        "cron_ticks": count,
        "cron_tick_seconds_max": round(float(slowest or 0), 3),
        "cron_ticks_cut_short": cut,
    }


def bench_first_check(
    monitors: int = 100_000, runs: int = 3, *, seed: int | None = None
) -> dict[str, Any]:
    """The runs of one stack (one minute each); lateness of first slots and of all jobs."""
    if monitors < EVENTS_PER_RUN * runs or runs < 1:
        raise ValueError(f"runs must be >= 1 and monitors >= {EVENTS_PER_RUN} per run")
    rng = random.Random(seed)
    with LocalStack(pg_cron=True) as stack, stack.connect() as conn:
        stack.create_regions(conn)
        regions = list(stack.region_codes)
        steady = [
            r[0]
            for r in conn.execute(
                _SEED_STEADY, {"n": monitors, "interval": STEADY_INTERVAL, "regions": regions}
            ).fetchall()
        ]
        paused = [
            r[0]
            for r in conn.execute(
                _SEED_INACTIVE,
                {"n": EVENTS_PER_RUN // 3 * runs, "intervals": list(EVENT_INTERVALS)},
            ).fetchall()
        ]
        conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
        conn.execute("VACUUM ANALYZE public.monitors, pgpulse.schedule")
        with PushCapture(stack.redis.url) as capture:
            relay = _start_relay(stack, stack.pg.datadir.parent)
            try:
                _wait_relay_listening(conn, relay)
                conn.execute(_TICK)
                start_us = _micros(
                    one(
                        conn.execute(
                            "SELECT finished_at FROM pgpulse.tick_runs WHERE trigger = 'bench'"
                            " ORDER BY id DESC LIMIT 1"
                        ).fetchone()
                    )[0]
                )
                end_us = start_us + runs * RUN_SECONDS * 1_000_000
                events: list[Event] = []
                touched: set[str] = set()
                with stack.connect() as product:
                    for offset, kind, run in _event_plan(runs, rng):
                        pause = start_us / 1e6 + offset - time.time()
                        if pause > 0:
                            time.sleep(pause)
                        if relay.poll() is not None:
                            raise RuntimeError(f"relay exited with {relay.returncode}")
                        events.append(_do_event(product, kind, run, rng, paused, steady, touched))
                # the last slots of the runs, and the first ones of the last events
                last_us = max([end_us] + [e.first_slot_us for e in events])
                deadline = last_us / 1e6 + SETTLE_SECONDS
                while True:
                    time.sleep(max(0.0, last_us / 1e6 + 1 - time.time()))
                    missing = _missing(capture.snapshot(), events, steady, start_us, end_us)
                    if not missing:
                        break
                    if time.time() > deadline or relay.poll() is not None:
                        raise RuntimeError(
                            f"{len(missing)} monitors lack jobs in Redis "
                            f"(relay exit code {relay.poll()}), e.g. "
                            f"{missing[0]}"
                        )
                ticks = _cron_ticks(conn, start_us, end_us)
            finally:
                _stop_relay(relay)
                time.sleep(0.2)  # the capture reads the last of the stream
        pushes = capture.pushes
        _check_once(pushes)
        if capture.undone:
            raise RuntimeError(f"the push script took back {capture.undone} pushes")
        in_redis = queued_jobs(stack)  # raises on a duplicate job_id
        if in_redis != len(pushes):
            raise RuntimeError(f"{in_redis} jobs in Redis, the capture saw {len(pushes)}")
    return _report(pushes, events, monitors, runs, start_us, ticks)


def _report(
    pushes: list[Push],
    events: list[Event],
    monitors: int,
    runs: int,
    start_us: int,
    ticks: dict[str, Any],
) -> dict[str, Any]:
    first_late = _first_job_late_ms(pushes, events)
    run_us = RUN_SECONDS * 1_000_000
    in_run: list[list[float]] = [[] for _ in range(runs)]
    for push in pushes:
        run = (push.slot_us - start_us) // run_us
        if 0 <= run < runs:
            in_run[run].append(push.late_ms)
    all_late = [late for run in in_run for late in run]
    firsts = list(first_late.values())
    record: dict[str, Any] = {
        "bench": "first_check",
        "monitors": monitors,
        "interval_s": STEADY_INTERVAL,
        "runs": runs,
        "run_seconds": RUN_SECONDS,
        "published": "LPUSH run by redis-server (its clock, MONITOR)",
        "first_slots": len(firsts),
        **_late_figures(firsts, "first_slot_late"),
        "first_slot_late_max_ms_by_kind": {
            kind: round(max(first_late[e.monitor_id] for e in events if e.kind == kind), 1)
            for kind in ("created", "reactivated", "rephased")
        },
        "first_slot_late_max_ms_runs": [
            round(max(first_late[e.monitor_id] for e in events if e.run == run), 1)
            for run in range(runs)
        ],
        "jobs": len(all_late),
        "jobs_within_50ms_pct": _share(all_late, 50),
        "jobs_within_250ms_pct": _share(all_late, 250),
        **_late_figures(all_late, "job_late"),
        "jobs_within_50ms_pct_runs": [_share(run, 50) for run in in_run],
        "jobs_early": sum(1 for late in all_late if late < 0),
        # jobs before the runs: the first tick's catch-up for monitors due before it ran
        "jobs_before_runs": sum(1 for p in pushes if p.slot_us < start_us),
        **ticks,
        "load_avg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
    }
    return record
