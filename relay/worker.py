"""The relay: drains pgpulse.outbox into regional Upstash queues.

Per region, a few worker tasks each claim a batch in one transaction (DELETE ... RETURNING
with SKIP LOCKED), publish it with one /pipeline request, and commit only after the publish
succeeded; a crash before COMMIT puts the rows back, and the push script's dedup key makes
the second publish a no-op. Workers wake on the tick's NOTIFY, on a timer for the earliest
deliver_at, or on the poll interval as a fallback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import signal
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from relay import logs, metrics
from relay.breaker import CircuitBreaker, State
from relay.config import ConfigError, Endpoint, RelaySettings, env_suffix, region_endpoint
from relay.db import DatabaseError, describe
from relay.errors import PublishError
from relay.outbox import Job, put_back, retry_backoff_s
from relay.queries import queries
from relay.queue import (CRITICALITIES, DUPLICATE, EXPIRED, PUSH_SCRIPT, dedup_key,
                         queue_key)
from relay.upstash import (MalformedReply, RegionRefused, RequestRejected, TokenRefused,
                           UpstashClient, region_failure)

Q = queries()

# What became of one job of a batch.
PUSHED_KIND = "pushed"
DUPLICATE_KIND = "duplicate"   # pushed before (a retry after a lost answer or a crash)
EXPIRED_KIND = "expired"       # the region's clock says it expired: never published late
FAILED = "failed"              # its own error: an attempt more, or the dead letters
HELD = "held"                  # the region refused the batch as a whole: back, no attempt
WAIT = "wait"                  # maybe pushed to a region that is down now: back, waits for it


@dataclass(frozen=True)
class Outcome:
    kind: str
    error: str | None = None
    unclear: bool = False  # the push may or may not have happened


@dataclass(eq=False)  # one object per region: compared and hashed by identity
class Region:
    """What the relay knows of one region: its row, endpoint, client and breaker."""

    code: str
    enabled: bool = True
    is_default: bool = False
    fallback: str | None = None
    client: UpstashClient | None = None
    breaker: CircuitBreaker | None = None
    script_sha: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0                # HTTP attempts so far (tells whether a probe went out)
    succeeded: bool = False          # an attempt succeeded since the breaker last opened
    refused: str | None = None       # the token-refused error, until an attempt succeeds
    row_healthy: bool | None = None  # regions.healthy as last read
    last_error: str | None = None    # the latest publish failure, for --once's verdict
    idle_backoff: float = 0.0        # due rows held by another worker: wait this long
    health_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Counts:
    """Totals since start, for `--once`, the benchmarks and the tests."""

    published: int = 0
    duplicates: int = 0
    failed: int = 0
    expired: int = 0
    rerouted: int = 0
    held: int = 0          # put back after the region refused a batch as a whole
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0  # HTTP attempts retried (transport errors, 5xx, timeouts)
    lags: list[float] = field(default_factory=list)  # published_at - deliver_at, seconds


class Relay:
    def __init__(self, dsn: str, settings: RelaySettings | None = None, *,
                 env: dict[str, str] | None = None, once: bool = False,
                 collect_lags: bool = False) -> None:
        self.dsn = dsn
        self.settings = settings or RelaySettings.from_env(env)
        self.env = env
        self.once = once
        self.collect_lags = collect_lags
        self.regions: dict[str, Region] = {}
        self.counts = Counts()
        self.stop = asyncio.Event()
        self.pool: AsyncConnectionPool | None = None
        self._tasks: set[asyncio.Task] = set()   # side tasks, cancelled at the end
        self._writes: set[asyncio.Task] = set()  # health writes, awaited at the end
        self._workers: dict[str, list[asyncio.Task]] = {}  # per region
        self._unconfigured: set[str] = set()  # regions without an endpoint (warned once)
        self._requeued: set[str] = set()  # --once: jobs put back for a later attempt
        self.relay_id = uuid.uuid4().hex[:12]  # this process, in region_observations
        self.undelivered: str | None = None  # --once: why due jobs were left, if they were

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> Counts:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        s = self.settings
        # behind a transaction-mode pooler every statement may meet another server session
        prepare = {} if s.listen else {"prepare_threshold": None}
        # a claim holds its connection while the publish takes a second one (push intents):
        # at most half the pool claims at once, so a claim can never wait on its own pool
        self._claim_slots = asyncio.Semaphore(max(1, (s.pool_size - 1) // 2))
        self.pool = AsyncConnectionPool(
            self.dsn, min_size=1, max_size=s.pool_size, open=False,
            kwargs={"application_name": "pgpulse-relay", **prepare},
            check=AsyncConnectionPool.check_connection, reconnect_timeout=3600)
        try:
            await self.pool.open(wait=True, timeout=30)
        except Exception as exc:
            await self.pool.close()
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        try:
            try:
                await self._load_regions()
            except psycopg.Error as exc:
                raise DatabaseError(describe(exc)) from exc
            if not self.regions:
                raise ConfigError("no region in pgpulse.regions (enabled or not) has an Upstash endpoint "
                                  "configured")
            logs.event("relay_started", regions=sorted(self.regions), once=self.once,
                       batch_size=s.batch_size, concurrency=s.concurrency, listen=s.listen,
                       pool_size=s.pool_size)
            if self.once:
                async with self.pool.connection() as conn:
                    started_at = (await (await conn.execute("SELECT now()")).fetchone())[0]
                try:
                    await self._maintain()
                except psycopg.Error as exc:
                    raise DatabaseError(describe(exc)) from exc
            self._start_workers()
            if not self.once:
                if s.listen:  # off behind a transaction-mode pooler: the poll interval wakes
                    self._spawn(self._listen(), "listen")
                self._spawn(self._watch_regions(), "regions")
                self._spawn(self._sample_depth(), "depth")
                self._spawn(self._maintain_forever(), "maintain")
            await self._join_workers()
            if self.once:
                self._reconcile_health()
                self.undelivered = await self._once_verdict(started_at)
        finally:
            self.stop.set()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._writes:  # the breaker's last word reaches regions.healthy
                await asyncio.wait(list(self._writes), timeout=5)
            for task in list(self._writes):
                task.cancel()
            await asyncio.gather(*self._writes, return_exceptions=True)
            for region in self.regions.values():
                if region.client:
                    await region.client.aclose()
            await self.pool.close()
            c = self.counts
            logs.event("relay_stopped", published=c.published, duplicates=c.duplicates,
                       expired=c.expired, failed=c.failed, rerouted=c.rerouted,
                       dead_lettered=c.dead_lettered, retries=c.retries)
        return self.counts

    async def _once_verdict(self, started_at) -> str | None:
        """Why `--once` leaves jobs behind that were due when it started (or that it put back
        for a later attempt), one line; None when it delivered everything it could."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["undelivered"], {
                "due_before": started_at, "requeued": list(self._requeued)})).fetchall()
        dead = self.counts.dead_lettered
        if not rows:
            return (f"{dead} job(s) failed their last attempt and were dead-lettered "
                    "(pgpulse dlq list)") if dead else None
        reasons = []
        for code, due, requeued in rows:
            region = self.regions.get(code)
            if region is not None and region.refused:
                why = (f"{region.refused}; check UPSTASH_REDIS_REST_TOKEN_{env_suffix(code)} "
                       "(or UPSTASH_REDIS_REST_TOKEN); its jobs stay in the outbox")
            elif region is None:
                why = f"region {code}: no Upstash endpoint configured here, or no such region"
            elif requeued:
                why = (f"region {code}: {requeued} job(s) failed and wait for a later attempt"
                       + (f" ({region.client.last_error or region.last_error})"
                          if region.client.last_error or region.last_error else ""))
            else:
                why = (region.client.last_error or region.last_error
                       or f"region {code}: breaker {region.breaker.state.value}")
            reasons.append((region is None or not region.refused, why, due))
        reasons.sort(key=lambda r: r[0])  # a refused token first: the likeliest mistake
        total = sum(r[2] for r in reasons)
        return (f"{reasons[0][1]}" if not reasons[0][0] else
                f"{total} due job(s) not delivered: {reasons[0][1]}") + "".join(
            f"; {why}" for _, why, _ in reasons[1:]) + (
            f"; {dead} job(s) dead-lettered" if dead else "")

    def _start_workers(self) -> None:
        """Worker tasks for every region that has none yet (regions may be added live)."""
        for code in self.regions:
            if code not in self._workers:
                self._workers[code] = [
                    asyncio.create_task(self._region_worker(code), name=f"worker:{code}:{i}")
                    for i in range(self.settings.concurrency)]

    async def _join_workers(self) -> None:
        """Waits for every worker (they end on stop, or in --once when nothing is due); a
        worker that crashed stops the others and its exception is raised."""
        while True:
            pending = {t for tasks in self._workers.values() for t in tasks if not t.done()}
            if not pending:
                break
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            crashed = [t for t in done if not t.cancelled() and t.exception()]
            if crashed:
                self.stop.set()
                await asyncio.wait(pending - done)
                raise crashed[0].exception()

    def _spawn(self, coro, name: str, tasks: set[asyncio.Task] | None = None) -> None:
        tasks = self._tasks if tasks is None else tasks
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # ------------------------------------------------------------------ regions

    async def _load_regions(self) -> None:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(Q["regions"])).fetchall()
        added = []
        for code, enabled, is_default, fallback, _healthy, _degraded, _weight in rows:
            region = self.regions.get(code)
            if region is None:
                try:
                    endpoint = region_endpoint(code, self.env)
                except ConfigError as exc:
                    if code not in self._unconfigured:
                        logs.warning("region_not_configured", region=code, reason=str(exc))
                        self._unconfigured.add(code)
                    continue
                region = self.regions[code] = self._new_region(endpoint)
                added.append(region)
            region.enabled, region.is_default, region.fallback = enabled, is_default, fallback
            if region.row_healthy is False and _healthy and enabled:  # back, by another relay
                self._spawn(self._reroute_home(region.code), "home")
            region.row_healthy = _healthy
        # load the push script everywhere at once (a failure here is retried on publish)
        await asyncio.gather(*(self._ensure_script(r) for r in added), return_exceptions=True)
        if self._workers:
            for region in added:
                logs.event("region_added", region=region.code)

    def _new_region(self, endpoint: Endpoint) -> Region:
        s = self.settings
        region = Region(code=endpoint.region)

        def on_change(old: State, new: State) -> None:
            metrics.set_breaker(region.code, new.value)
            logs.warning("breaker_changed", region=region.code, old=old.value, new=new.value)
            if new is State.OPEN:
                region.succeeded = False
            self._spawn(self._write_health(region), "health", self._writes)
            if new is State.CLOSED:
                region.wake.set()

        region.breaker = CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s,
                                        on_change=on_change)
        metrics.init_region(region.code)

        def on_attempt(ok: bool) -> None:
            region.attempts += 1
            if ok:
                region.succeeded, region.refused = True, None
                region.breaker.record_success()
            else:
                region.breaker.record_failure()

        def on_retry(error: str, attempt: int, wait_s: float) -> None:
            self.counts.retries += 1
            logs.warning("publish_retry", region=region.code, attempt=attempt, error=error,
                         wait_s=round(wait_s, 3))

        region.client = UpstashClient(
            endpoint, timeout=s.publish_timeout_s, retry_window=s.retry_window_s,
            may_retry=lambda: not self.stop.is_set() and not region.breaker.is_open(),
            on_attempt=on_attempt, on_retry=on_retry)
        return region

    async def _ensure_script(self, region: Region) -> str:
        if region.script_sha is None:
            region.script_sha = await region.client.command("SCRIPT", "LOAD", PUSH_SCRIPT)
        return region.script_sha

    async def _write_health(self, region: Region) -> None:
        """Records this relay's view of the region (its breaker) in region_observations;
        regions.healthy follows every live relay's recent views, not the last writer.
        Writes of one region run one at a time, each with the state current when it runs.
        No view before this relay has reached the region: closed means little until then."""
        async with region.health_lock:
            for attempt in range(10):
                healthy = region.breaker.state is State.CLOSED
                if healthy and not region.succeeded:
                    return
                try:
                    async with self.pool.connection() as conn:
                        changed = await (await conn.execute(Q["observe_region"], {
                            "region": region.code, "relay": self.relay_id, "healthy": healthy,
                            "ttl_s": self.settings.health_ttl_s})).fetchone()
                    if changed is not None:
                        region.row_healthy = changed[0]
                        if changed[0]:
                            self._spawn(self._reroute_home(region.code), "home")
                    return
                except psycopg.Error as exc:
                    logs.warning("health_write_failed", region=region.code, error=describe(exc))
                    await asyncio.sleep(min(2 ** attempt * 0.1, 5))

    def _reconcile_health(self) -> None:
        """Renews this relay's view of every region it has one of (views expire, so a relay
        that is gone stops counting), which also re-decides regions.healthy."""
        for region in self.regions.values():
            if not region.health_lock.locked():
                self._spawn(self._write_health(region), "health", self._writes)

    async def _reroute_home(self, code: str) -> None:
        """A region is back: its monitors' jobs that a tick routed elsewhere while it was
        down (and that no relay has tried yet) go back to it, at once rather than after
        the minute the tick had planned."""
        try:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(Q["reroute_home"], {"region": code})).fetchone()
                if row[1]:
                    await conn.execute("NOTIFY pgpulse_outbox")
        except psycopg.Error as exc:
            logs.warning("reroute_home_failed", region=code, error=describe(exc))
            return
        if row[1]:
            logs.event("jobs_returned_home", region=code, count=row[1])
            self._wake_all()

    async def _maintain(self) -> None:
        """Expired jobs are deleted and counted wherever they are (also in regions no relay
        drains); jobs of deleted, renamed or disabled regions follow their monitor's
        current routing."""
        async with self.pool.connection() as conn:
            while True:
                rows = await (await conn.execute(Q["sweep_expired"], {"limit": 5000})).fetchall()
                for region, n in rows:
                    self.counts.expired += n
                    metrics.expired.labels(region).inc(n)
                    logs.event("jobs_expired", region=region, count=n, swept=True)
                if sum(n for _, n in rows) < 5000:
                    break
            await conn.execute(Q["sweep_records"])
            moved, inserted = await (await conn.execute(Q["reroute_orphans"],
                                                        {"limit": 5000})).fetchone()
            if moved:
                await conn.execute("NOTIFY pgpulse_outbox")
                logs.event("orphans_rerouted", count=moved, kept=inserted)
        if moved:
            self._wake_all()

    async def _maintain_forever(self) -> None:
        while not self.stop.is_set():
            try:
                await self._maintain()
            except psycopg.Error as exc:
                logs.warning("maintenance_failed", error=describe(exc))
            await self._sleep(max(self.settings.poll_interval_s, 1.0) * 2)

    async def _watch_regions(self) -> None:
        """Picks up region changes (enabled, fallback, default, new regions)."""
        while not self.stop.is_set():
            await self._sleep(max(self.settings.poll_interval_s, 1.0))
            with contextlib.suppress(psycopg.Error):
                await self._load_regions()
                self._start_workers()
                self._reconcile_health()

    def _fallback_for(self, region: Region) -> Region | None:
        """Where this region's jobs go while its breaker is open, if anywhere."""
        candidates = [self.regions.get(region.fallback)] if region.fallback else []
        candidates += [r for r in self.regions.values() if r.is_default]
        for target in candidates:
            if target and target is not region and target.enabled and not target.breaker.is_open():
                return target
        return None

    def breakers_open_s(self) -> dict[str, float]:
        """Seconds each not-closed breaker has been open, for the alert rules."""
        return {code: r.breaker.open_for() for code, r in self.regions.items()
                if r.breaker.is_open()}

    # ------------------------------------------------------------------ draining

    async def _region_worker(self, code: str) -> None:
        region = self.regions[code]
        failures = 0
        while not self.stop.is_set():
            # cleared before the claim: a NOTIFY arriving after it is not lost
            region.wake.clear()
            try:
                claimed = await self._drain_once(region)
                failures = 0
            except psycopg.Error as exc:
                failures += 1
                logs.warning("database_error", region=code, error=describe(exc))
                await self._sleep(min(0.1 * 2 ** failures, 5.0))
                continue
            except PublishError as exc:
                failures += 1
                if isinstance(exc, TokenRefused):
                    self._token_refused(exc)
                else:
                    region.last_error = str(exc)
                    logs.warning("publish_failed", region=code, error=str(exc))
                if self.once and region.breaker.is_open() and self._fallback_for(region) is None:
                    return
                await self._sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            if self.once:  # only what is due now: claim again until nothing is left
                if claimed == 0:
                    return
                continue
            if claimed >= self.settings.batch_size:
                continue
            await self._wait_for_work(region, claimed)

    def _token_refused(self, exc: TokenRefused) -> None:
        """A refused token will not work on a retry: open that region's breaker now (its
        jobs reroute or wait; the half-open probe tries again) and say so once."""
        region = self.regions[exc.region]
        region.breaker.trip()
        if region.refused is None:
            logs.error("token_refused", region=region.code, error=str(exc),
                       hint=f"check UPSTASH_REDIS_REST_TOKEN_{env_suffix(region.code)} "
                            "(or UPSTASH_REDIS_REST_TOKEN)")
        region.refused = str(exc)

    async def _drain_once(self, region: Region) -> int:
        """Claims, publishes and commits one batch; returns the number of jobs claimed.
        Raises RegionRefused after committing a batch the region refused as a whole."""
        target, fallback_only, probing = region, False, False
        if not region.enabled:  # an operator took it out: its jobs follow their routing
            return 0
        if region.breaker.allow():
            probing = region.breaker.state is State.HALF_OPEN
        else:
            target = self._fallback_for(region)
            if target is None:
                return 0
            fallback_only = True
        attempts = region.attempts
        s = self.settings
        # rerouting: a job whose push to its own region may have happened waits for it
        held_by = region.code if fallback_only and s.unclear_push == "wait" else None
        intents: list[tuple[list[str] | None, list[int]]] = []  # push intents, their jobs
        groups: dict[Region, list[int]] = {}
        try:
            async with self._claim_slots, self.pool.connection() as conn, conn.transaction():
                # the claim is a lease: should this process freeze mid-publish, PostgreSQL
                # ends its transaction and the rows go back to the other relays
                await conn.execute(Q["claim_lease"], {"ms": str(int(s.claim_lease_s * 1000))})
                async with conn.cursor(row_factory=class_row(Job)) as cur:
                    await cur.execute(Q["claim_due"], {
                        "region": region.code, "limit": s.batch_size,
                        "fallback_only": fallback_only, "held_by": held_by})
                    jobs = await cur.fetchall()
                if not jobs:
                    if probing:
                        await region.client.command("PING")  # the probe, when there is no batch
                    return 0
                live = [job for job in jobs if not job.expired]
                logs.event("batch_claimed", logging.DEBUG, region=region.code, jobs=len(jobs),
                           target=target.code)
                outcomes: list[Outcome] = [Outcome(WAIT)] * len(live)
                groups = self._destinations(region, target, live)
                try:
                    async with asyncio.timeout(max(s.claim_lease_s - 1.0, 0.5)):
                        for dest, positions in groups.items():
                            group = [live[i] for i in positions]
                            intents.append((await self._record_intent(dest, group), positions))
                            published = await self._publish(dest, group,
                                                            rerouted=dest is not region)
                            for i, outcome in zip(positions, published):
                                outcomes[i] = outcome
                except TimeoutError:
                    raise PublishError(
                        f"region {target.code}: publish outlasted the claim lease "
                        f"({s.claim_lease_s:g} s); the batch goes back") from None
                await put_back(conn, *self._failures(live, outcomes))
        finally:
            if probing and region.attempts == attempts:
                region.breaker.release_probe()  # no request reached the region: probe again
        # committed: every outcome is known, unless a reply was unreadable
        for intent, positions in intents:
            if not any(outcomes[i].unclear for i in positions):
                await self._forget_intent(intent)
        for dest, positions in groups.items():
            self._account(region, dest, [live[i] for i in positions],
                          [outcomes[i] for i in positions], 0)
        waiting = sum(1 for o in outcomes if o.kind == WAIT)
        self._account(region, target, [], [], len(jobs) - len(live), waiting=waiting)
        held = [o.error for o in outcomes if o.kind == HELD]
        if held:
            raise RegionRefused(f"region {target.code}: {held[0]}")
        return len(jobs)

    def _destinations(self, region: Region, target: Region,
                      jobs: list[Job]) -> dict[Region, list[int]]:
        """Where each job goes: the batch's target, unless a push of it may already have
        reached another region (PGPULSE_UNCLEAR_PUSH=wait): then that region, or nowhere
        for now (it waits) while that region is down. Positions into jobs, per region."""
        groups: dict[Region, list[int]] = {}
        for i, job in enumerate(jobs):
            dest = target
            if (self.settings.unclear_push == "wait" and job.pinned_to
                    and job.pinned_to != target.code):
                dest = self.regions.get(job.pinned_to)
                if dest is None or not dest.enabled or dest.breaker.state is not State.CLOSED:
                    continue  # stays WAIT
            groups.setdefault(dest, []).append(i)
        return groups

    async def _record_intent(self, target: Region, jobs: list[Job]) -> list[str] | None:
        """Commits, before the push, that these jobs may land in target's queues: should the
        outcome stay unknown (a lost answer, a killed relay), they go nowhere else."""
        if self.settings.unclear_push != "wait":
            return None
        ids = [job.job_id for job in jobs]
        async with self.pool.connection() as conn:
            await conn.execute(Q["record_intent"], {
                "region": target.code, "job_ids": ids,
                "expires_at": [job.expires_at for job in jobs]})
        return ids

    async def _forget_intent(self, job_ids: list[str] | None) -> None:
        if not job_ids:
            return
        with contextlib.suppress(psycopg.Error):  # left over, it expires with its jobs
            async with self.pool.connection() as conn:
                await conn.execute(Q["forget_intent"], {"job_ids": job_ids})

    def _push_command(self, sha: str, target: Region, job: Job, rerouted: bool) -> list[str]:
        job_json = job.job_json
        if rerouted:  # the payload keeps its original region and says where it went
            job_json = f'{job_json[:-1]}, "delivered_to": "{target.code}"}}'
        return ["EVALSHA", sha, "2", dedup_key(job.job_id),
                queue_key(target.code, job.criticality), job_json,
                str(int(job.expires_at.timestamp())), str(self.settings.dedup_margin_s)]

    async def _publish(self, target: Region, jobs: list[Job], *,
                       rerouted: bool) -> list[Outcome]:
        """Pushes jobs to target's queues in /pipeline requests bounded by count and bytes;
        returns one Outcome per job."""
        try:
            sha = await self._ensure_script(target)
        except RequestRejected as exc:  # e.g. a proxy refusing everything: an attempt each
            return [Outcome(FAILED, str(exc))] * len(jobs)
        commands = [self._push_command(sha, target, job, rerouted) for job in jobs]
        outcomes: list[Outcome] = [Outcome(FAILED, "not sent")] * len(jobs)
        limit = self.settings.max_request_bytes
        start, size = 0, 2
        for i, command in enumerate(commands):
            bytes_ = len(json.dumps(command)) + 1
            if bytes_ + 2 > limit:  # alone over the limit: this job can never be sent
                if i > start:
                    await self._publish_chunk(target, commands, outcomes, start, i)
                outcomes[i] = Outcome(FAILED, f"job of {bytes_} bytes is over the "
                                              f"{limit}-byte request limit")
                start, size = i + 1, 2
                continue
            if size + bytes_ > limit:
                await self._publish_chunk(target, commands, outcomes, start, i)
                start, size = i, 2
            size += bytes_
        if start < len(commands):
            await self._publish_chunk(target, commands, outcomes, start, len(commands))
        return outcomes

    async def _publish_chunk(self, target: Region, commands: list[list[str]],
                             outcomes: list[Outcome], lo: int, hi: int, *,
                             reloaded: bool = False) -> None:
        """One /pipeline request for commands[lo:hi]; fills outcomes[lo:hi]."""
        try:
            replies = await target.client.pipeline(commands[lo:hi])
        except RequestRejected as exc:
            if exc.too_large and hi - lo > 1:  # split until each part fits
                mid = (lo + hi) // 2
                await self._publish_chunk(target, commands, outcomes, lo, mid)
                await self._publish_chunk(target, commands, outcomes, mid, hi)
                return
            # refused as a whole and for good: an attempt of each job, so that a request
            # the region will never take ends in the dead letters instead of looping
            outcomes[lo:hi] = [Outcome(FAILED, str(exc))] * (hi - lo)
            return
        except MalformedReply as exc:
            # which commands ran is unknown: each job is tried again in this region (its
            # dedup key makes that safe) at the cost of an attempt
            outcomes[lo:hi] = [Outcome(FAILED, str(exc), unclear=True)] * (hi - lo)
            return
        if not reloaded and any("NOSCRIPT" in str(r.get("error", "")) for r in replies):
            target.script_sha = None  # Redis lost its scripts (restart): load and push again
            logs.warning("script_reloaded", region=target.code)
            sha = await self._ensure_script(target)
            for command in commands[lo:hi]:
                command[1] = sha
            await self._publish_chunk(target, commands, outcomes, lo, hi, reloaded=True)
            return
        region_error = region_failure(replies)
        for i, reply in enumerate(replies, start=lo):
            if "error" in reply:
                outcomes[i] = Outcome(HELD if region_error else FAILED, str(reply["error"]))
            elif reply.get("result") == EXPIRED:
                outcomes[i] = Outcome(EXPIRED_KIND)
            elif reply.get("result") == DUPLICATE:
                outcomes[i] = Outcome(DUPLICATE_KIND)
            else:
                outcomes[i] = Outcome(PUSHED_KIND)
        if region_error:
            logs.warning("region_refused_writes", region=target.code, error=region_error[:300])

    def _failures(self, jobs: list[Job], outcomes: list[Outcome]) -> tuple[list, list]:
        """Jobs that failed on their own: back with an attempt more and a backoff, or to the
        dead letters. Jobs the region refused as a whole: back as they were."""
        requeue, dead = [], []
        for job, outcome in zip(jobs, outcomes):
            if outcome.kind == HELD:
                requeue.append(job.requeue_params(outcome.error, attempts=job.attempts,
                                                  backoff_s=0.0))
            elif outcome.kind == WAIT:
                requeue.append(job.requeue_params(
                    f"waits for region {job.pinned_to}, which may have it already",
                    attempts=job.attempts, backoff_s=1.0))
            elif outcome.kind == FAILED:
                attempts = job.attempts + 1
                params = job.requeue_params(outcome.error, attempts=attempts,
                                            backoff_s=retry_backoff_s(attempts))
                if attempts >= self.settings.max_attempts:
                    dead.append(params)
                    logs.warning("job_dead_lettered", job_id=job.job_id, region=job.region,
                                 attempts=attempts, error=outcome.error[:200])
                else:
                    requeue.append(params)
        if self.once:  # --once's verdict names what it put back
            self._requeued.update(p["job_id"] for p in requeue)
        return requeue, dead

    def _account(self, region: Region, target: Region, live: list[Job],
                 outcomes: list[Outcome], expired: int, waiting: int = 0) -> None:
        c = self.counts
        c.batches += 1 if live else 0
        c.held += waiting
        now = time.time()
        kinds = collections.Counter(o.kind for o in outcomes)
        ok = [job for job, o in zip(live, outcomes) if o.kind in (PUSHED_KIND, DUPLICATE_KIND)]
        expired += kinds[EXPIRED_KIND]  # expired by the time the region saw it
        n_failed = kinds[FAILED]
        c.published += len(ok)  # pushed now, or found pushed before (duplicates)
        c.duplicates += kinds[DUPLICATE_KIND]
        c.failed += n_failed
        c.held += kinds[HELD]
        c.expired += expired
        if kinds[DUPLICATE_KIND]:
            metrics.duplicates.labels(target.code).inc(kinds[DUPLICATE_KIND])
        if expired:
            metrics.expired.labels(region.code).inc(expired)
            logs.event("jobs_expired", region=region.code, count=expired)
        if n_failed:
            metrics.failed.labels(target.code).inc(n_failed)
            dead = sum(1 for job, o in zip(live, outcomes)
                       if o.kind == FAILED and job.attempts + 1 >= self.settings.max_attempts)
            c.dead_lettered += dead
            if dead:
                metrics.dead_lettered.labels(region.code).inc(dead)
        if not ok:
            return
        metrics.published.labels(target.code).inc(len(ok))
        if target is not region:
            c.rerouted += len(ok)
            metrics.rerouted.labels(region.code, target.code).inc(len(ok))
            logs.event("jobs_rerouted", region=region.code, to=target.code, count=len(ok))
        metrics.schedule_lag.observe_many(target.code,
                                          [now - job.scheduled_for.timestamp() for job in ok])
        if self.collect_lags:
            c.lags.extend(now - job.deliver_at.timestamp() for job in ok)
        logs.event("batch_published", region=target.code, jobs=len(ok), failed=n_failed,
                   held=kinds[HELD], expired=expired)

    # ------------------------------------------------------------------ waking

    async def _wait_for_work(self, region: Region, claimed: int) -> None:
        """Sleeps until the next deliver_at, a NOTIFY, the breaker's probe time or stop."""
        timeout = self.settings.poll_interval_s
        closed = region.breaker.state is State.CLOSED
        if not closed:
            timeout = min(timeout, max(region.breaker.seconds_until_probe(), 0.05))
        if closed or self._fallback_for(region) is not None:
            try:  # while the breaker is open, only jobs that may reroute count
                async with self.pool.connection() as conn:
                    row = await (await conn.execute(Q["next_due"], {
                        "region": region.code, "fallback_only": not closed})).fetchone()
                if row[0] is not None:
                    timeout = min(timeout, max(row[0], 0.0))
                if claimed == 0 and row[0] is not None and row[0] <= 0:
                    # due rows that the claim skipped: another worker or relay holds them
                    # (publishing, or frozen). Back off instead of claiming in a loop.
                    region.idle_backoff = min(max(region.idle_backoff * 2, 0.05), 1.0)
                    timeout = region.idle_backoff
                else:
                    region.idle_backoff = 0.0
            except psycopg.Error:
                timeout = 0.5
        # a short floor gathers jobs falling due together into one batch
        timeout = max(timeout, 0.02 if claimed or timeout <= 0 else 0.0)
        waits = [asyncio.ensure_future(region.wake.wait()), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _listen(self) -> None:
        """LISTEN pgpulse_outbox on a dedicated connection; reconnects when it is lost."""
        delay = 0.1
        while not self.stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, connect_timeout=10,
                        application_name="pgpulse-relay-listen") as conn:
                    await conn.execute("LISTEN pgpulse_outbox")
                    delay = 0.1
                    self._wake_all()  # jobs may have arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake_all()
            except psycopg.Error as exc:
                logs.warning("listen_lost", error=describe(exc))
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    def _wake_all(self) -> None:
        for region in self.regions.values():
            region.wake.set()

    async def _sample_depth(self) -> None:
        """Samples each region's queue depth; over the threshold the region is degraded."""
        while not self.stop.is_set():
            for region in list(self.regions.values()):
                if region.breaker.is_open():
                    continue
                with contextlib.suppress(PublishError, psycopg.Error):
                    replies = await region.client.pipeline(
                        [["LLEN", queue_key(region.code, c)] for c in CRITICALITIES])
                    depth = sum(r.get("result") or 0 for r in replies)
                    metrics.queue_depth.labels(region.code).set(depth)
                    async with self.pool.connection() as conn:
                        await conn.execute(Q["set_region_degraded"], {
                            "region": region.code,
                            "degraded": depth > self.settings.backlog_degraded})
            await self._sleep(self.settings.depth_interval_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
