"""`pgpulse bench e2e`: the production shape, end to end. A relay process is running; one
tick (default settings, lookahead 0) claims N due monitors (should it be cut short, the
next ticks follow at once and the run says so); the clock stops when every job
is in the regional queues. Exactly once is checked after every run (the run fails
otherwise), and the CPU time of each component is read from /proc, so the cost per job
can be split between PostgreSQL, the relay, the dev server and redis-server."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg.rows import dict_row

from relay.bench.relay import flush_queues, queued_jobs
from relay.db import one
from relay.local.stack import LocalStack

CRITICALITIES = ("critical", "high", "normal", "low")

# Every monitor due now (0..30 s ago) on a 5-minute interval: one job each, and the next
# slot lies far beyond the tick's horizon. A quarter use round-robin.
_SEED_MONITORS = """
INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, criticality,
                             next_check_at)
SELECT 'https://example.com/health/' || g, 5,
       (%(regions)s::text[] || ARRAY[NULL])[1 + g %% (cardinality(%(regions)s::text[]) + 1)],
       (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
       now() - make_interval(secs => (g %% 30000) / 1000.0)
  FROM generate_series(1, %(n)s) g
"""

# pgpulse's clock, moved back (the product's next_check_at is not pgpulse's: changing it
# would be a "check now" that writes the jobs at once, in that UPDATE)
_RESET_MONITORS = """
UPDATE pgpulse.schedule
   SET next_check_at = now() - make_interval(secs => random() * 30), last_scheduled_at = NULL
"""

_TICK = "CALL pgpulse.tick(NULL, 'bench', p_lookahead => '0 seconds')"

# A server sized for a million monitors, as a production one would be (the throwaway
# default, 256 MB of shared buffers and 2 GB of WAL between checkpoints, is for the tests):
# a million monitors, their jobs and indexes fit in memory, and no checkpoint falls inside
# a run (each would log every page touched after it in full)
SERVER_SETTINGS = {"shared_buffers": "'2GB'", "max_wal_size": "'8GB'"}


def _cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """User + system CPU of one process (and of its children it has waited for)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = data[data.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds(postmaster: int) -> float:
    """The postmaster, its live children (backends, walwriter, ...) and the ones it reaped:
    an ended backend's time moves into the postmaster's cutime, so a delta stays right."""
    total = _cpu_seconds(postmaster, with_reaped_children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(data[data.rindex(")") + 2 :].split()[1]) == postmaster:
            total += _cpu_seconds(int(entry.name))
    return total


class _Components:
    """CPU seconds per component, read together."""

    def __init__(self, stack: LocalStack, relay_pid: int) -> None:
        self.pids = {
            "relay": relay_pid,
            "devserver": _pid(stack.devserver.proc),
            "redis_server": _pid(stack.redis.proc),
        }
        self.postmaster = _pid(stack.pg.proc)

    def sample(self) -> dict[str, float]:
        sample = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        sample["postgres"] = _postgres_cpu_seconds(self.postmaster)
        return sample


def _queued(clients: list[redis.Redis], region_codes: tuple[str, ...]) -> int:
    total = 0
    for client, code in zip(clients, region_codes):
        pipe = client.pipeline(transaction=False)
        for criticality in CRITICALITIES:
            pipe.llen(f"pgpulse:jobs:{code}:{criticality}")
        total += sum(pipe.execute())
    return total


def _start_relay(stack: LocalStack, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, **stack.env(), "PGPULSE_LOG_LEVEL": "WARNING"}
    with open(workdir / "relay.err", "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "relay"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def _wait_relay_listening(
    conn: psycopg.Connection, relay: subprocess.Popen, timeout: float = 30
) -> None:
    """The relay is ready when its LISTEN connection is up (it also polls, but a tick's
    NOTIFY is the production wake-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.poll() is not None:
            raise RuntimeError(f"relay exited with {relay.returncode} before the tick")
        if conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone():
            return
        time.sleep(0.05)
    raise RuntimeError(f"relay not listening within {timeout:g} s")


def _stop_relay(relay: subprocess.Popen) -> None:
    if relay.poll() is None:
        os.killpg(relay.pid, signal.SIGTERM)
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(relay.pid, signal.SIGKILL)
            relay.wait()


def _one_run(
    stack: LocalStack, conn: psycopg.Connection, monitors: int, workdir: Path, timeout: float
) -> dict[str, Any]:
    conn.execute("TRUNCATE pgpulse.outbox")
    conn.execute(_RESET_MONITORS)
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")
    flush_queues(stack)
    clients = [
        redis.Redis.from_url(stack.redis.url, db=stack.redis_db(code))
        for code in stack.region_codes
    ]
    relay = _start_relay(stack, workdir)
    try:
        _wait_relay_listening(conn, relay)
        components = _Components(stack, relay.pid)
        before = components.sample()
        wal_before = _one(conn, "SELECT pg_current_wal_lsn() AS lsn")["lsn"]
        started = time.perf_counter()
        conn.execute(_TICK)
        tick_seconds = time.perf_counter() - started
        first_tick = _last_tick(conn)
        # a tick cut short leaves the rest to the next one: run those now (pg_cron would
        # a minute later), so the run still ends with every monitor delivered
        claimed, ticks = first_tick["claimed"], 1
        while claimed < monitors and ticks < 100:
            conn.execute(_TICK)
            claimed, ticks = claimed + _last_tick(conn)["claimed"], ticks + 1
        deadline = started + timeout
        while (queued := _queued(clients, stack.region_codes)) < monitors:
            if relay.poll() is not None:
                raise RuntimeError(
                    f"relay exited with {relay.returncode}; {queued} of {monitors} jobs queued"
                )
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {queued} of {monitors} jobs queued after {timeout:g} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        after = components.sample()
        wal_bytes = _one(
            conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s) AS bytes", (wal_before,)
        )["bytes"]
    finally:
        _stop_relay(relay)
        for client in clients:
            client.close()
    if claimed != monitors:
        raise RuntimeError(f"{ticks} ticks claimed {claimed} of {monitors} monitors")
    delivered = queued_jobs(stack)  # raises on a duplicate
    if delivered != monitors:
        raise RuntimeError(f"{delivered} distinct jobs in the queues, expected {monitors}")
    return {
        "seconds": seconds,
        "tick_seconds": tick_seconds,
        "cut_short": first_tick["cut_short"],
        "ticks": ticks,
        "wal_bytes": float(wal_bytes),
        "cpu": {name: after[name] - before[name] for name in after},
    }


def _last_tick(conn: psycopg.Connection) -> dict[str, Any]:
    run = _one(
        conn,
        "SELECT monitors_claimed, jobs_written, cut_short FROM pgpulse.tick_runs"
        " WHERE trigger = 'bench' ORDER BY id DESC LIMIT 1",
    )
    if run["jobs_written"] != run["monitors_claimed"]:
        raise RuntimeError(
            f"a tick claimed {run['monitors_claimed']} monitors but wrote "
            f"{run['jobs_written']} jobs"
        )
    return {"claimed": run["monitors_claimed"], "cut_short": run["cut_short"]}


def _one(conn: psycopg.Connection, sql: str, params: tuple = ()) -> dict[str, Any]:
    return one(conn.cursor(row_factory=dict_row).execute(sql, params).fetchone())


def _pid(proc: subprocess.Popen | None) -> int:
    assert proc is not None, "the stack is started"
    return proc.pid


def bench_e2e(monitors: int = 100_000, runs: int = 3, timeout: float = 600) -> dict[str, Any]:
    """Due monitors into the regional queues through a running relay; medians of runs."""
    if monitors < 1 or runs < 1:
        raise ValueError("monitors and runs must be >= 1")
    results = []
    with LocalStack(pg_cron=False, pg_settings=SERVER_SETTINGS) as stack:
        workdir = stack.pg.datadir.parent  # the cluster's own temporary directory
        with stack.connect() as conn:
            stack.create_regions(conn)
            conn.execute(_SEED_MONITORS, {"n": monitors, "regions": list(stack.region_codes)})
            conn.execute("SELECT pgpulse.follow_apply(1000000)")  # a bulk insert: followed now
            for _ in range(runs):
                results.append(_one_run(stack, conn, monitors, workdir, timeout))
    seconds = statistics.median(r["seconds"] for r in results)
    cpu = {name: statistics.median(r["cpu"][name] for r in results) for name in results[0]["cpu"]}
    return {
        "bench": "e2e",
        "monitors": monitors,
        "runs": runs,
        "regions": len(stack.region_codes),
        "seconds_median": round(seconds, 3),
        "jobs_per_s_median": round(monitors / seconds),
        "seconds_all": [round(r["seconds"], 3) for r in results],
        "tick_seconds_median": round(statistics.median(r["tick_seconds"] for r in results), 3),
        # the first tick of a run was cut short (and `ticks_all` says how many it took)
        "tick_cut_short_runs": sum(1 for r in results if r["cut_short"]),
        "ticks_all": [r["ticks"] for r in results],
        # tick, claims and monitor bumps together: the write rate one PostgreSQL must sustain
        "wal_bytes_per_job_median": round(
            statistics.median(r["wal_bytes"] for r in results) / monitors
        ),
        "cpu_seconds_median": {name: round(value, 2) for name, value in cpu.items()},
        "cpu_us_per_job_median": {
            name: round(value / monitors * 1e6, 1) for name, value in cpu.items()
        },
    }
