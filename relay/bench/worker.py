"""Benchmarks of `pgpulse worker` (real worker processes, the dev server, local targets):

- `worker-lag`: execution lag (the target's arrival time − the job's scheduled_for, so
  never less than the worker's own start) at `rate` checks a minute over three regions,
  one worker per region, targets answering in `target_ms`; the jobs are pushed into the
  queues at their scheduled_for, as the relay publishes them. Floors: p99 ≤ 300 ms and
  none early.
- `worker-throughput`: checks/s and CPU per check of one worker process, a new connection
  per check (floor 400/s), and Upstash commands per check at full batches (≤ 0.05),
  counted by the dev server.
- `worker-idle`: commands an idle worker sends, per day (≤ 30,000 by default).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from relay.bench import percentile
from relay.config import env_suffix
from relay.devserver import DevServer
from relay.local.embedded import EmbeddedRedis
from relay.local.targets import LocalTargets
from relay.queue import queue_key

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _job(url: str, region: str, scheduled: float, interval_s: float = 60.0) -> str:
    return json.dumps(
        {
            "v": 1,
            "job_id": str(uuid.uuid4()),
            "monitor_id": str(uuid.uuid4()),
            "url": f"{url}&s={scheduled:.6f}",
            "method": "GET",
            "timeout_ms": 5000,
            "expected_status": [200],
            "retry": {"max_attempts": 1, "delay_ms": 0},
            "region": region,
            "criticality": "normal",
            "scheduled_for": _iso(scheduled),
            "expires_at": _iso(scheduled + interval_s),
            "attempt": 1,
        }
    )


class _Stack:
    """redis-server, the dev server (Redis 6.2 commands only) and local targets."""

    def __init__(self, regions: tuple[str, ...]) -> None:
        self.tokens = {code: secrets.token_urlsafe(12) for code in regions}
        self.regions = regions

    def __enter__(self) -> _Stack:
        self.redis = EmbeddedRedis().__enter__()
        self.devserver = DevServer(
            self.redis.url,
            {tok: i + 1 for i, tok in enumerate(self.tokens.values())},
            redis_compat="6.2",
        ).__enter__()
        self.targets = LocalTargets().__enter__()
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Any] = []
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        self.targets.__exit__()
        self.devserver.__exit__()
        self.redis.__exit__()

    def db(self, region: str) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, db=self.regions.index(region) + 1)

    def start_worker(self, region: str, concurrency: int, **settings: Any) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTASH_", "PGPULSE_"))}
        env |= {
            f"UPSTASH_REDIS_REST_URL_{env_suffix(region)}": self.devserver.url,
            f"UPSTASH_REDIS_REST_TOKEN_{env_suffix(region)}": self.tokens[region],
            "PGPULSE_ALLOW_PRIVATE_TARGETS": "on",
            "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p),
        }
        env |= {f"PGPULSE_{k.upper()}": str(v) for k, v in settings.items()}
        log = tempfile.TemporaryFile()
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "worker", "--region", region,
             "--concurrency", str(concurrency)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        self.workers.append(proc)
        return proc

    def wait_started(self, timeout: float = 30.0) -> None:
        """Until every worker has claimed once (its heartbeat is there)."""
        deadline = time.monotonic() + timeout
        for region in self.regions:
            while not self.db(region).zcard(f"pgpulse:workers:{region}"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not start")
                time.sleep(0.05)

    def commands(self, region: str) -> int:
        """Commands the region's database got through the dev server (what Upstash bills)."""
        db = self.devserver.stats()["dbs"].get(str(self.regions.index(region) + 1), {})
        return int(db.get("commands", 0))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_worker_lag(
    rate_per_min: float = 10_000, seconds: float = 60.0, target_ms: float = 50.0
) -> dict[str, Any]:
    """Jobs falling due evenly at `rate_per_min` over three regions for `seconds`."""
    with _Stack(REGIONS) as stack:
        for region in REGIONS:
            stack.start_worker(region, concurrency=200)
        stack.wait_started()
        dbs = {r: stack.db(r) for r in REGIONS}
        url = stack.targets.url(f"/ok?ms={target_ms:g}")
        interval = 60.0 / rate_per_min
        total = int(rate_per_min * seconds / 60)
        start = time.time() + 1.0
        pushed = 0
        while pushed < total:
            now = time.time()
            due = min(total, int((now - start) / interval) + 1) if now >= start else 0
            pipes = {r: dbs[r].pipeline(transaction=False) for r in REGIONS}
            for i in range(pushed, due):
                region = REGIONS[i % len(REGIONS)]
                # published at its slot (a few ms late at most), as the relay does
                pipes[region].lpush(
                    queue_key(region, "normal"), _job(url, region, start + i * interval)
                )
            for pipe in pipes.values():
                pipe.execute()
            pushed = due
            time.sleep(0.005)
        deadline = time.monotonic() + 30
        while len(stack.targets.lags) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        lags = list(stack.targets.lags)
    return {
        "bench": "worker-lag",
        "rate_per_min": rate_per_min,
        "seconds": seconds,
        "target_ms": target_ms,
        "checks": len(lags),
        "missing": total - len(lags),
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags, default=0) * 1000, 1),
        "started_early": sum(1 for lag in lags if lag < 0),
    }


def bench_worker_throughput(
    checks: int = 20_000, concurrency: int = 200, target_ms: float = 50.0, batch: int = 100
) -> dict[str, Any]:
    """One worker, `checks` jobs waiting: checks/s, CPU per check, commands per check."""
    region = REGIONS[0]
    with _Stack((region,)) as stack:
        db = stack.db(region)
        url = stack.targets.url(f"/ok?ms={target_ms:g}")
        now = time.time()
        pipe = db.pipeline(transaction=False)
        for _ in range(checks):
            pipe.lpush(queue_key(region, "normal"), _job(url, region, now, interval_s=3600))
        pipe.execute()
        stack.devserver.reset_stats()
        proc = stack.start_worker(region, concurrency=concurrency, worker_batch=batch)
        started = time.monotonic()
        cpu0 = _cpu_s(proc.pid)
        deadline = started + 600
        while stack.targets.hits < checks and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        cpu = _cpu_s(proc.pid) - cpu0
        # every check acknowledged: nothing left in flight
        while db.zcard(f"pgpulse:inflight:{region}") and time.monotonic() < deadline:
            time.sleep(0.02)
        commands = stack.commands(region)
    done = stack.targets.hits
    return {
        "bench": "worker-throughput",
        "checks": done,
        "concurrency": concurrency,
        "target_ms": target_ms,
        "checks_per_s": round(done / elapsed, 1),
        "cpu_ms_per_check": round(cpu * 1000 / max(done, 1), 3),
        "commands": commands,
        "commands_per_check": round(commands / max(done, 1), 4),
    }


def bench_worker_idle(
    seconds: float = 60.0, idle_max_s: float = 3.0, ramp_s: float = 8.0
) -> dict[str, Any]:
    """An idle worker's commands over `seconds` (after its backoff ramp), per day."""
    region = REGIONS[0]
    with _Stack((region,)) as stack:
        stack.start_worker(region, concurrency=10, worker_idle_max_s=idle_max_s)
        stack.wait_started()
        time.sleep(ramp_s)  # the ramp: 2 s at 0.05 s, then doubling from 0.1 s to idle_max_s
        stack.devserver.reset_stats()
        time.sleep(seconds)
        commands = stack.commands(region)
    return {
        "bench": "worker-idle",
        "seconds": seconds,
        "idle_max_s": idle_max_s,
        "commands": commands,
        "commands_per_day": round(commands * 86400 / seconds),
    }
