"""The relay: drains pgpulse.outbox into regional Upstash queues.

Per region, a few worker tasks each claim a batch in one transaction (DELETE ... RETURNING
with SKIP LOCKED), publish it with one /pipeline request, and commit only after the publish
succeeded; a crash before COMMIT puts the rows back, and the push script's dedup key makes
the second publish a no-op. Workers wake on the tick's NOTIFY, on a timer for the earliest
deliver_at, or on the poll interval as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import AsyncConnectionPool

from relay import logs, metrics
from relay.breaker import CircuitBreaker, State
from relay.config import ConfigError, Endpoint, RelaySettings, env_suffix, region_endpoint
from relay.db import DatabaseError, describe
from relay.errors import PublishError
from relay.queries import queries
from relay.queue import CRITICALITIES, PUSH_SCRIPT, dedup_key, queue_key
from relay.upstash import TokenRefused, UpstashClient

Q = queries()


@dataclass
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
    health_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Counts:
    """Totals since start, for `--once`, the benchmarks and the tests."""

    published: int = 0
    duplicates: int = 0
    failed: int = 0
    expired: int = 0
    rerouted: int = 0
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

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> Counts:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        s = self.settings
        # behind a transaction-mode pooler every statement may meet another server session
        prepare = {} if s.listen else {"prepare_threshold": None}
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
                raise ConfigError("no enabled region has an Upstash endpoint configured")
            logs.event("relay_started", regions=sorted(self.regions), once=self.once,
                       batch_size=s.batch_size, concurrency=s.concurrency, listen=s.listen,
                       pool_size=s.pool_size)
            self._start_workers()
            if not self.once and s.listen:
                self._spawn(self._listen(), "listen")
                self._spawn(self._watch_regions(), "regions")
                self._spawn(self._sample_depth(), "depth")
            await self._join_workers()
            if self.once:
                self._reconcile_health()
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
        refused = [r for r in self.regions.values() if r.refused]
        if self.once and refused:  # --once could not deliver everything due: say why
            raise ConfigError("; ".join(
                f"{r.refused}; check UPSTASH_REDIS_REST_TOKEN_{env_suffix(r.code)} (or "
                f"UPSTASH_REDIS_REST_TOKEN); its jobs stay in the outbox" for r in refused))
        return self.counts

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
        """Writes the breaker's state to regions.healthy. Writes of one region run one at a
        time and each writes the state current when it runs, so the last word wins."""
        async with region.health_lock:
            for attempt in range(10):
                healthy = region.breaker.state is State.CLOSED
                try:
                    async with self.pool.connection() as conn:
                        await conn.execute(Q["set_region_health"],
                                           {"region": region.code, "healthy": healthy})
                    region.row_healthy = healthy
                    return
                except psycopg.Error as exc:
                    logs.warning("health_write_failed", region=region.code, error=describe(exc))
                    await asyncio.sleep(min(2 ** attempt * 0.1, 5))

    def _reconcile_health(self) -> None:
        """Corrects a regions.healthy that disagrees with the breaker, e.g. false left by an
        earlier relay: to true only once this relay has reached the region itself."""
        for region in self.regions.values():
            closed = region.breaker.state is State.CLOSED
            if region.row_healthy is None or region.row_healthy == closed:
                continue
            if not closed or region.succeeded:
                self._spawn(self._write_health(region), "health", self._writes)

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
        """Claims, publishes and commits one batch; returns the number of jobs claimed."""
        target, fallback_only, probing = region, False, False
        if region.breaker.allow():
            probing = region.breaker.state is State.HALF_OPEN
        else:
            target = self._fallback_for(region)
            if target is None:
                return 0
            fallback_only = True
        attempts = region.attempts
        try:
            async with self.pool.connection() as conn, conn.transaction():
                rows = await (await conn.execute(Q["claim_due"], {
                    "region": region.code, "limit": self.settings.batch_size,
                    "fallback_only": fallback_only})).fetchall()
                if not rows:
                    if probing:
                        await region.client.command("PING")  # the probe, when there is no batch
                    return 0
                live = [row for row in rows if not row[10]]
                expired = len(rows) - len(live)
                logs.event("batch_claimed", logging.DEBUG, region=region.code, jobs=len(rows),
                           target=target.code)
                outcomes = (await self._publish(target, live, rerouted=target is not region)
                            if live else [])
                failed = [(row, error) for row, error in zip(live, outcomes) if error is not None]
                if failed:
                    await self._handle_failures(conn, failed)
        finally:
            if probing and region.attempts == attempts:
                region.breaker.release_probe()  # no request reached the region: probe again
        self._account(region, target, live, outcomes, expired)
        return len(rows)

    async def _publish(self, target: Region, rows: list[tuple], *, rerouted: bool,
                       reloaded: bool = False) -> list[str | None]:
        """Pushes rows to target's queues; returns None (pushed or duplicate) or an error per row."""
        sha = await self._ensure_script(target)
        ttl = str(self.settings.dedup_ttl_s)
        commands = []
        for row in rows:
            job_json = row[11]
            if rerouted:  # the payload keeps its original region and says where it went
                job_json = f'{job_json[:-1]}, "delivered_to": "{target.code}"}}'
            commands.append(["EVALSHA", sha, "2", dedup_key(row[0]),
                             queue_key(target.code, row[3]), job_json, ttl])
        replies = await target.client.pipeline(commands)
        if not reloaded and any("NOSCRIPT" in str(r.get("error", "")) for r in replies):
            target.script_sha = None  # Redis lost its scripts (restart): load and push again
            logs.warning("script_reloaded", region=target.code)
            return await self._publish(target, rows, rerouted=rerouted, reloaded=True)
        results: list[str | None] = []
        for reply in replies:
            if "error" in reply:
                results.append(str(reply["error"]))
            else:
                results.append(None)
                if reply.get("result") == 0:
                    self.counts.duplicates += 1
                    metrics.duplicates.labels(target.code).inc()
        return results

    async def _handle_failures(self, conn, failed: list[tuple[tuple, str]]) -> None:
        """Inline errors fail their job only: back with a backoff, or to the dead letters."""
        requeue, dead = [], []
        for row, error in failed:
            (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
             attempts, payload, allow_fallback, _expired, _json) = row
            attempts += 1
            params = {"job_id": job_id, "monitor_id": monitor_id, "region": region,
                      "criticality": criticality, "scheduled_for": scheduled_for,
                      "deliver_at": deliver_at, "expires_at": expires_at,
                      "allow_fallback": allow_fallback, "payload": payload,
                      "attempts": attempts, "error": error[:500]}
            if attempts >= self.settings.max_attempts:
                dead.append(params)
                logs.warning("job_dead_lettered", job_id=job_id, region=region,
                             attempts=attempts, error=error[:200])
            else:
                params["backoff_s"] = min(0.5 * 2 ** attempts, 60) * random.uniform(0.8, 1.2)
                requeue.append(params)
        async with conn.cursor() as cur:
            if requeue:
                await cur.executemany(Q["requeue"], requeue)
            if dead:
                await cur.executemany(Q["dead_letter"], dead)

    def _account(self, region: Region, target: Region, live: list[tuple],
                 outcomes: list[str | None], expired: int) -> None:
        c = self.counts
        c.batches += 1
        now = time.time()
        ok = [row for row, error in zip(live, outcomes) if error is None]
        n_failed = len(live) - len(ok)
        c.published += len(ok)
        c.failed += n_failed
        c.expired += expired
        if expired:
            metrics.expired.labels(region.code).inc(expired)
            logs.event("jobs_expired", region=region.code, count=expired)
        if n_failed:
            metrics.failed.labels(target.code).inc(n_failed)
            dead = sum(1 for row, e in zip(live, outcomes)
                       if e is not None and row[7] + 1 >= self.settings.max_attempts)
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
        metrics.schedule_lag.observe_many(target.code, [now - row[4].timestamp() for row in ok])
        if self.collect_lags:
            c.lags.extend(now - row[5].timestamp() for row in ok)
        logs.event("batch_published", region=target.code, jobs=len(ok), failed=n_failed,
                   expired=expired)

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
