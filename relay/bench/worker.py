"""Benchmarks of `pgpulse worker` (real worker processes, the dev server, local targets):

- `worker-lag`: execution lag (the target's arrival time − the job's scheduled_for, so
  never less than the worker's own start) at `rate` checks a minute over three regions,
  one worker per region, targets answering in `target_ms`; the jobs are published at their
  scheduled_for through the dev server with the relay's push script, as the relay does.
  Floors: p99 ≤ 300 ms and none early. Also each worker's checks/s and CPU per check at
  that rate, and Upstash commands per check (the relay's pushes and the workers' calls).
- `worker-throughput`: checks/s and CPU per check of one worker process, a new connection
  per check (floor 400/s), and Upstash commands per check at full batches (≤ 0.05),
  counted by the dev server.
- `worker-idle`: commands an idle worker sends, per day (≤ 30,000 by default).

`pgpulse bench worker-lag` runs the three and ends with their rows for docs/benchmarks.md.
"""

from __future__ import annotations

import collections
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

import httpx
import redis

from relay.bench import percentile
from relay.config import env_suffix
from relay.delivery.queue import PUSH_SCRIPT, dedup_key, queue_key
from relay.devserver import DevServer
from relay.local.embedded import EmbeddedRedis
from relay.local.targets import LocalTargets

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _job(url: str, region: str, scheduled: float, interval_s: float = 60.0) -> str:
    return _job_parts(url, region, scheduled, interval_s)[1]


def _job_parts(
    url: str, region: str, scheduled: float, interval_s: float = 60.0
) -> tuple[str, str]:
    """A job's id and its JSON, as the relay publishes it."""
    job_id = str(uuid.uuid4())
    return job_id, json.dumps(
        {
            "v": 1,
            "job_id": job_id,
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


class _RelayShapedPusher:
    """Publishes jobs at their slot as the relay does: the relay's own push script through the
    dev server, one call per region with the jobs fallen due since the last call, so its
    commands are counted (and billed) like the relay's."""

    def __init__(self, stack: _Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.devserver.url, timeout=10)
        self.sha: dict[str, str] = {}
        self.calls: collections.Counter[str] = collections.Counter()  # region -> push calls
        for region in stack.regions:
            self.sha[region] = self._send(region, [["SCRIPT", "LOAD", PUSH_SCRIPT]])
        self.calls.clear()

    def _send(self, region: str, commands: list[list[str]]) -> Any:
        headers = {"Authorization": f"Bearer {self.stack.tokens[region]}"}
        (reply,) = self.http.post("/pipeline", json=commands, headers=headers).json()
        if "error" in reply:
            raise RuntimeError(f"region {region}: {reply['error']}")
        self.calls[region] += 1
        return reply["result"]

    def push(self, region: str, jobs: list[tuple[str, str, float]]) -> None:
        """jobs: (job_id, job JSON, expires_at unix seconds)."""
        keys = [
            k for job_id, _, _ in jobs for k in (dedup_key(job_id), queue_key(region, "normal"))
        ]
        argv = [a for _, body, expires in jobs for a in (body, str(int(expires)))]
        answers = self._send(
            region, [["EVALSHA", self.sha[region], str(len(keys)), *keys, "60", *argv]]
        )
        if answers != [1] * len(jobs):
            raise RuntimeError(f"region {region}: the push script answered {answers!r:.100}")

    def close(self) -> None:
        self.http.close()


def bench_worker_lag(
    rate_per_min: float = 10_000, seconds: float = 60.0, target_ms: float = 50.0
) -> dict[str, Any]:
    """Jobs falling due evenly at `rate_per_min` over three regions for `seconds`, published
    at their slot through the dev server with the relay's push script; one worker per
    region. Lag is measured by the targets; commands are what the dev server counted."""
    with _Stack(REGIONS) as stack:
        workers = {region: stack.start_worker(region, concurrency=200) for region in REGIONS}
        stack.wait_started()
        pusher = _RelayShapedPusher(stack)
        url = stack.targets.url(f"/ok?ms={target_ms:g}")
        interval = 60.0 / rate_per_min
        total = int(rate_per_min * seconds / 60)
        start = time.time() + 1.0
        stack.devserver.reset_stats()
        cpu0 = {r: _cpu_s(p.pid) for r, p in workers.items()}
        pushed = 0
        try:
            while pushed < total:
                now = time.time()
                due = min(total, int((now - start) / interval) + 1) if now >= start else 0
                batches: dict[str, list[tuple[str, str, float]]] = {r: [] for r in REGIONS}
                for i in range(pushed, due):
                    region = REGIONS[i % len(REGIONS)]
                    scheduled = start + i * interval
                    job_id, body = _job_parts(url, region, scheduled)
                    batches[region].append((job_id, body, scheduled + 60.0))
                for region, jobs in batches.items():
                    if jobs:
                        pusher.push(region, jobs)
                pushed = due
                time.sleep(0.005)
            finished = time.time()
            deadline = time.monotonic() + 30
            while len(stack.targets.lags) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            # every check acknowledged before the commands are read
            while (
                any(stack.db(r).zcard(f"pgpulse:inflight:{r}") for r in REGIONS)
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            cpu = sum(_cpu_s(p.pid) - cpu0[r] for r, p in workers.items())
            commands = sum(stack.commands(r) for r in REGIONS)
            relay_commands = sum(pusher.calls.values())
        finally:
            pusher.close()
        lags = list(stack.targets.lags)
    checks = len(lags)
    return {
        "bench": "worker-lag",
        "rate_per_min": rate_per_min,
        "seconds": seconds,
        "target_ms": target_ms,
        "checks": checks,
        "missing": total - checks,
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags, default=0) * 1000, 1),
        "started_early": sum(1 for lag in lags if lag < 0),
        # each worker's share at this rate (the flat-out figure is bench worker-throughput's)
        "checks_per_s_per_worker": round(checks / max(finished - start, 1e-9) / len(REGIONS), 1),
        "worker_cpu_ms_per_check": round(cpu * 1000 / max(checks, 1), 3),
        # what Upstash would bill for this run: the relay's pushes and the workers' calls
        "commands_per_check": round(commands / max(checks, 1), 4),
        "relay_commands_per_check": round(relay_commands / max(checks, 1), 4),
        "worker_commands_per_check": round((commands - relay_commands) / max(checks, 1), 4),
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


def benchmark_rows(lag: dict[str, Any], flat: dict[str, Any], idle: dict[str, Any]) -> str:
    """The three records as rows of docs/benchmarks.md's table."""
    command = (
        f"`pgpulse bench worker-lag --rate-per-min {lag['rate_per_min']:g} "
        f"--seconds {lag['seconds']:g} --checks {flat['checks']} "
        f"--idle-seconds {idle['seconds']:g} --json`"
    )
    early = lag["started_early"]
    missing = lag["missing"]
    return "\n".join(
        [
            f"| worker execution lag (the target's arrival − `scheduled_for`): "
            f"{lag['rate_per_min']:,.0f} checks a minute over three regions for "
            f"{lag['seconds']:g} s, one worker per region, targets answering in "
            f"{lag['target_ms']:g} ms, published at their slot with the relay's push script "
            f"| p99 ≤ 300 ms, none early "
            f"| **p50 {lag['lag_p50_ms']:g} ms, p99 {lag['lag_p99_ms']:g} ms**, max "
            f"{lag['lag_max_ms']:g} ms, {'none' if not early else early} early"
            f"{f', {missing} missing' if missing else ''} of {lag['checks']:,}; each worker "
            f"{lag['checks_per_s_per_worker']:g} checks/s at "
            f"{lag['worker_cpu_ms_per_check']:g} ms CPU per check; "
            f"{lag['commands_per_check']:g} Upstash commands per check at this rate "
            f"(relay {lag['relay_commands_per_check']:g}, workers "
            f"{lag['worker_commands_per_check']:g}) | {command} |",
            f"| one worker flat out: {flat['checks']:,} checks waiting, a new connection per "
            f"check, targets answering in {flat['target_ms']:g} ms, concurrency "
            f"{flat['concurrency']} | ≥ 400 checks/s; ≤ 0.05 commands per check at full "
            f"batches | **{flat['checks_per_s']:g} checks/s**, {flat['cpu_ms_per_check']:g} ms "
            f"CPU per check; **{flat['commands_per_check']:g} commands per check** "
            f"({flat['commands']:,} for {flat['checks']:,}) | the same |",
            f"| an idle worker's Upstash commands (`PGPULSE_WORKER_IDLE_MAX_S` "
            f"{idle['idle_max_s']:g}) | ≤ 30,000 a day | **{idle['commands_per_day']:,} a "
            f"day** ({idle['commands']} in {idle['seconds']:g} s) | the same |",
        ]
    )
