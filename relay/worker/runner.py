"""`pgpulse worker --region CODE`: the reference regional worker. It claims jobs with the
contract's claim script (as many as it has free slots, at most a batch), runs each check
(relay.worker.checks), acknowledges finished ones in batches with their results, and
backs off when idle. SIGTERM: no new claims, the checks in flight finish and are
acknowledged, exit 0. kill -9: the jobs' leases run out and another claim runs them again."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from relay import logs
from relay.backoff import Backoff, sleep_unless_stopped
from relay.config import Endpoint, RelaySettings, WorkerSettings
from relay.delivery.upstash import UpstashClient
from relay.errors import PgPulseError
from relay.supervisor import Supervisor
from relay.worker import metrics
from relay.worker.checks import (
    REFUSED_TARGET,
    Checker,
    CheckJob,
    CheckResult,
    MalformedJob,
    Resolver,
)
from relay.worker.protocol import COMMAND_KIND, HEARTBEAT_S, Claim, Claimed, ConsumerQueue

IDLE_FIRST_S = 0.05  # the wait after an empty claim, for the first IDLE_RAMP_AFTER_S ...
IDLE_RAMP_AFTER_S = 2.0  # ... of idleness; then doubled each time up to idle_max_s
CLAIM_RETRY = Backoff(first=0.5, most=30.0, jitter=0.3)  # a failed claim or ack
ACK_EVERY_S = 0.05  # finished checks wait this long for others to share their ack call


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class WorkerCounts:
    """What a worker did (since it started)."""

    checks: int = 0
    ok: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    expired: int = 0
    malformed: int = 0
    duplicates: int = 0
    failed_to_run: int = 0
    reclaimed: int = 0  # runs after a lapsed lease
    claims: int = 0
    empty_claims: int = 0
    acks: int = 0
    commands: int = 0  # requests sent to the region (each is one command)
    early: int = 0  # started before scheduled_for (never expected)


class RegionalWorker:
    def __init__(
        self,
        endpoint: Endpoint,
        settings: WorkerSettings | None = None,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        resolver: Resolver | None = None,
        relay_settings: RelaySettings | None = None,
        stop: asyncio.Event | None = None,
        on_result: Any = None,
        metrics_at: str | None = None,
    ) -> None:
        self.settings = settings or WorkerSettings.from_env()
        relay = relay_settings or RelaySettings.from_env()
        self.region = endpoint.region
        self.concurrency = concurrency or self.settings.worker_concurrency
        self.worker_id = worker_id or new_worker_id()
        self.counts = WorkerCounts()
        self.supervisor = Supervisor(stop)
        self.on_result = on_result  # called with each CheckResult (benchmarks, the demo)
        self.metrics_at = metrics_at  # HOST:PORT of /metrics, or None
        metrics.init_region(self.region, self.concurrency)
        self.client = UpstashClient(
            endpoint,
            timeout=relay.publish_timeout_s,
            retry_window=relay.retry_window_s,
            may_retry=lambda: not self.supervisor.stopping,
            on_attempt=self._sent,
        )
        self.queue = ConsumerQueue(
            self.client,
            self.region,
            self.worker_id,
            lease_margin_ms=int(self.settings.worker_lease_margin_s * 1000),
            max_runs=self.settings.worker_max_runs,
            results_cap=self.settings.worker_results_cap,
        )
        checker_options: dict[str, Any] = {
            "allow_private": self.settings.allow_private_targets,
            "max_body_bytes": self.settings.worker_max_body_bytes,
            "max_redirects": self.settings.worker_max_redirects,
        }
        if resolver is not None:
            checker_options["resolver"] = resolver
        self.checker = Checker(**checker_options)
        self.running: set[asyncio.Task] = set()
        self.slot_free = asyncio.Event()
        self.acks: list[tuple[str, str]] = []
        self.ack_ready = asyncio.Event()
        self.window: list[CheckResult] = []  # results since the last worker_stats line

    @property
    def stop(self) -> asyncio.Event:
        return self.supervisor.stop

    def _sent(self, ok: bool) -> None:
        self.counts.commands += 1
        kind = COMMAND_KIND.get()
        metrics.commands.labels(self.region, kind).inc()
        if not ok:
            metrics.command_errors.labels(self.region, kind).inc()

    async def run(self, *, signals: bool = False) -> WorkerCounts:
        # bound first: a taken port ends the worker before it claims anything
        try:
            sock = metrics.listen(self.metrics_at) if self.metrics_at else None
        except PgPulseError:
            await self.checker.aclose()
            await self.client.aclose()
            raise
        served = asyncio.Event()  # /metrics answers until the last check is acknowledged
        serving = (
            asyncio.create_task(metrics.serve_metrics(sock, served), name="worker:metrics")
            if sock is not None
            else None
        )
        logs.event(
            "worker_started",
            region=self.region,
            worker_id=self.worker_id,
            concurrency=self.concurrency,
            allow_private_targets=self.settings.allow_private_targets,
        )
        try:
            if signals:
                with self.supervisor.stop_on_signals():
                    await self._run()
            else:
                await self._run()
        finally:
            await self.checker.aclose()
            await self.client.aclose()
            served.set()
            if serving is not None:
                await serving
        logs.event(
            "worker_stopped",
            region=self.region,
            worker_id=self.worker_id,
            checks=self.counts.checks,
        )
        return self.counts

    async def _run(self) -> None:
        self.supervisor.spawn(self._stats_loop(), "worker:stats")
        acker = asyncio.create_task(self._ack_loop(), name="worker:acks")
        try:
            await self._claim_loop()
            if self.running:  # SIGTERM: the checks in flight finish and are acknowledged
                await asyncio.wait(set(self.running))
        finally:
            self.stop.set()  # also when the claim loop failed: the acker must end
            self.ack_ready.set()
            await acker
            await self.supervisor.shutdown()
            self._log_stats()

    async def _claim_loop(self) -> None:
        idle = idle_since = 0.0
        failures = 0
        last_claim = 0.0
        while not self.stop.is_set():
            free = self.concurrency - len(self.running)
            wanted = min(free, self.settings.worker_batch)
            if wanted == 0:
                # busy: wait for a slot, but renew the heartbeat meanwhile
                self.slot_free.clear()
                wait = max(0.0, last_claim + HEARTBEAT_S - time.monotonic())
                if wait > 0:
                    await self._wait_for(self.slot_free, wait)
                    continue
            try:
                claim = await self.queue.claim(wanted)
            except PgPulseError as exc:
                failures += 1
                delay = CLAIM_RETRY.delay(failures)
                logs.warning(
                    "claim_failed",
                    region=self.region,
                    error=str(exc)[:300],
                    retry_in_s=round(delay, 2),
                )
                await sleep_unless_stopped(self.stop, delay)
                continue
            failures = 0
            last_claim = time.monotonic()
            self._claimed(claim)
            if wanted and not claim.jobs:
                self.counts.empty_claims += 1
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= IDLE_RAMP_AFTER_S:
                    idle = min(max(idle * 2, IDLE_FIRST_S), self.settings.worker_idle_max_s)
                await sleep_unless_stopped(self.stop, max(idle, IDLE_FIRST_S))
            else:
                idle, idle_since = 0.0, 0.0
                if len(claim.jobs) < wanted:  # the queue is drained: let a few more arrive
                    await sleep_unless_stopped(self.stop, IDLE_FIRST_S)

    async def _wait_for(self, event: asyncio.Event, seconds: float) -> None:
        stop = asyncio.ensure_future(self.stop.wait())
        other = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stop, other}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            other.cancel()

    def _claimed(self, claim: Claim) -> None:
        c = self.counts
        c.claims += 1
        c.expired += claim.expired
        c.malformed += claim.malformed
        c.duplicates += claim.duplicates
        region = self.region
        metrics.last_claim.labels(region).set(time.time())
        for reason, n in (
            ("expired", claim.expired),
            ("malformed", claim.malformed),
            ("duplicate", claim.duplicates),
            ("failed_to_run", len(claim.failed)),
        ):
            if n:
                metrics.dropped.labels(region, reason).inc(n)
        if claim.expired or claim.malformed or claim.duplicates:
            logs.event(
                "jobs_dropped",
                region=self.region,
                expired=claim.expired,
                malformed=claim.malformed,
                duplicates=claim.duplicates,
            )
        for job in claim.failed:
            c.failed_to_run += 1
            logs.warning("job_failed_to_run", region=self.region, job_id=job.job_id, runs=job.run)
        now = claim.now_ms / 1000
        for claimed in claim.jobs:
            try:
                check = CheckJob.parse(claimed.body)
            except MalformedJob as exc:
                c.malformed += 1
                metrics.dropped.labels(region, "malformed").inc()
                logs.warning(
                    "job_malformed", region=self.region, job_id=claimed.job_id, error=str(exc)
                )
                self._ack(claimed.job_id, "")
                continue
            if claimed.run > 1:
                c.reclaimed += 1
                metrics.reclaimed.labels(region).inc()
            if now < check.scheduled_for:  # published early by someone: wait for the slot
                c.early += 1
            task = asyncio.create_task(
                self._run_check(check, claimed), name=f"check:{check.job_id}"
            )
            self.running.add(task)
            task.add_done_callback(self._done)
        metrics.in_flight.labels(region).set(len(self.running))

    def _done(self, task: asyncio.Task) -> None:
        self.running.discard(task)
        metrics.in_flight.labels(self.region).set(len(self.running))
        self.slot_free.set()

    async def _run_check(self, job: CheckJob, claimed: Claimed) -> None:
        wait = job.scheduled_for - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            result = await self.checker.check(job, claimed.run)
        except Exception as exc:  # a bug must not lose the job's ack or stop the worker
            metrics.checks.labels(self.region, metrics.CRASHED).inc()
            logs.error(
                "check_crashed",
                region=self.region,
                job_id=job.job_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            return  # not acknowledged: its lease brings it back
        c = self.counts
        c.checks += 1
        if result.ok:
            c.ok += 1
        else:
            c.errors[result.error] += 1
        region = self.region
        metrics.checks.labels(region, metrics.outcome_of(result.error)).inc()
        metrics.execution_lag.labels(region).observe(result.started_at - result.scheduled_for)
        if result.latency_ms is not None:
            metrics.check_latency.labels(region).observe(result.latency_ms / 1000)
        if result.error == REFUSED_TARGET:  # a job pushed around the database's rule
            logs.warning(
                "check_refused_target",
                region=self.region,
                job_id=job.job_id,
                url=job.url[:300],
                detail=result.detail,
            )
        else:
            logs.event(
                "check_done",
                logging.DEBUG,
                region=self.region,
                job_id=job.job_id,
                ok=result.ok,
                status=result.status,
                error=result.error,
                latency_ms=result.latency_ms,
                run=result.run,
            )
        self.window.append(result)
        if self.on_result is not None:
            self.on_result(result)
        self._ack(job.job_id, result.as_json())

    def _ack(self, job_id: str, result: str) -> None:
        self.acks.append((job_id, result))
        self.ack_ready.set()

    async def _ack_loop(self) -> None:
        """Sends finished checks' acks, many per call; on stop, everything left."""
        failures = 0
        while True:
            await self.ack_ready.wait()
            if not self.stop.is_set() and len(self.acks) < self.settings.worker_batch:
                await asyncio.sleep(ACK_EVERY_S)
            self.ack_ready.clear()
            batch, self.acks = self.acks[:1000], self.acks[1000:]
            if batch:
                try:
                    answers = await self.queue.ack(batch)
                    failures = 0
                    self.counts.acks += len(batch)
                    lost = sum(1 for a in answers if a == 0)
                    if lost:
                        logs.warning("acks_not_in_flight", region=self.region, jobs=lost)
                except PgPulseError as exc:
                    failures += 1
                    self.acks = batch + self.acks  # kept: the lease covers a while
                    logs.warning("ack_failed", region=self.region, error=str(exc)[:300])
                    if self.stop.is_set() and failures >= 3:
                        return  # leaving: the leases bring these jobs back
                    await asyncio.sleep(CLAIM_RETRY.delay(failures))
            if self.acks:
                self.ack_ready.set()
            elif self.stop.is_set() and not self.running:
                return

    async def _stats_loop(self) -> None:
        while not await sleep_unless_stopped(self.stop, self.settings.worker_stats_interval_s):
            self._log_stats()

    def _log_stats(self) -> None:
        window, self.window = self.window, []
        lags = sorted((r.started_at - r.scheduled_for) * 1000 for r in window)
        failing = collections.Counter(f"{r.url} {r.error}" for r in window if not r.ok)
        logs.event(
            "worker_stats",
            region=self.region,
            worker_id=self.worker_id,
            checks=len(window),
            ok=sum(1 for r in window if r.ok),
            errors=dict(collections.Counter(r.error for r in window if not r.ok)),
            lag_p50_ms=round(_pct(lags, 0.5), 1),
            lag_p99_ms=round(_pct(lags, 0.99), 1),
            in_flight=len(self.running),
            failing=[f"{what} ×{n}" for what, n in failing.most_common(5)],
            commands=self.counts.commands,
        )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]
