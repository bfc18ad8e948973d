"""The relay: drains pgpulse.outbox into regional Upstash queues.

A Relay is composed of small parts, each in its own module of relay.delivery: per region, a
few drainers (drainer: claim -> publish -> commit); the region registry and each region's
breaker and health (regions); the LISTEN wake-ups (notifier); queue-depth sampling (depth);
clock skew (clocks); outbox upkeep (sweeper); and the supervisor that runs and stops their
tasks (relay.supervisor). Every query goes through relay.delivery.outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import psycopg
from psycopg_pool import AsyncConnectionPool

from relay import logs
from relay.backoff import Backoff
from relay.config import RelaySettings, env_suffix
from relay.db import describe, unreachable
from relay.delivery.clocks import ClockWatch
from relay.delivery.depth import DepthSampler
from relay.delivery.drainer import Drainer
from relay.delivery.follower import Follower
from relay.delivery.notifier import Notifier
from relay.delivery.outbox import Outbox, Undelivered
from relay.delivery.outcomes import BatchListener, Counts
from relay.delivery.regions import Region, Registry
from relay.delivery.results import History, ResultsDrain, maintain_once, maintain_results
from relay.delivery.sweeper import Sweeper
from relay.errors import ConfigError, DatabaseError
from relay.supervisor import Supervisor

# a relay started while the database is down tries again after 0.5 s, 1 s ... at most 15 s
DATABASE_RETRY = Backoff(first=0.5, most=15.0, jitter=0.2)


class Relay:
    """on_batch hears of every batch that reached a region's queues (benchmarks, demo);
    handle_signals=False leaves SIGTERM/SIGINT to the caller (set `stop` yourself)."""

    def __init__(
        self,
        dsn: str,
        settings: RelaySettings | None = None,
        *,
        env: dict[str, str] | None = None,
        once: bool = False,
        on_batch: BatchListener | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or RelaySettings.from_env(env)
        self.env = env
        self.once = once
        self.on_batch = on_batch
        self.handle_signals = handle_signals
        self.counts = Counts()
        self.supervisor = Supervisor()
        self.stop = self.supervisor.stop
        self.relay_id = uuid.uuid4().hex[:12]  # this process, in region_observations
        self.registry: Registry | None = None
        self.drainers: list[Drainer] = []
        self.history = History()  # the results history's span (relay.delivery.results)
        self.results_drains: dict[str, ResultsDrain] = {}
        self.undelivered: str | None = None  # --once: why due jobs were left, if they were

    @property
    def regions(self) -> dict[str, Region]:
        return self.registry.regions if self.registry else {}

    def breakers_open_s(self) -> dict[str, float]:
        """Seconds each not-closed breaker has been open, for the alert rules."""
        return self.registry.breakers_open_s() if self.registry else {}

    async def run(self) -> Counts:
        signals = (
            self.supervisor.stop_on_signals() if self.handle_signals else contextlib.nullcontext()
        )
        with signals:
            pool = await self._open_pool()
            if pool is None:  # stopped while waiting for the database
                self._log_stopped()
                return self.counts
            store = Outbox(pool)
            self.registry = Registry(
                store,
                self.settings,
                self.supervisor,
                self.counts,
                relay_id=self.relay_id,
                env=self.env,
            )
            try:
                await self._run(store)
            finally:
                await self.supervisor.shutdown()
                await self.registry.aclose()
                await pool.close()
                self._log_stopped()
        return self.counts

    def _log_stopped(self) -> None:
        c = self.counts
        logs.event(
            "relay_stopped",
            published=c.published,
            duplicates=c.duplicates,
            expired=c.expired,
            failed=c.failed,
            rerouted=c.rerouted,
            dead_lettered=c.dead_lettered,
            retries=c.retries,
            results=c.results,
            results_malformed=c.results_malformed,
        )

    async def _open_pool(self) -> AsyncConnectionPool | None:
        """The connection pool, once the database answers. A relay started during an outage
        waits for it, trying again with backoff (the alert rules beside it report the outage),
        and starts working when it is back; None if stopped meanwhile. `--once` tries once:
        a cron wrapper wants the exit code."""
        failures, last_error = 0, None
        while not self.supervisor.stopping:
            error = await unreachable(self.dsn)
            if error is None:
                try:
                    pool = await self._new_pool()
                except DatabaseError as exc:  # down again since the probe
                    if self.once:
                        raise
                    error = str(exc)
                else:
                    if failures:
                        logs.event("relay_database_reachable", attempts=failures + 1)
                    return pool
            if self.once:
                raise DatabaseError(f"cannot connect to the database: {error}")
            failures += 1
            if error != last_error:  # once per reason, not per attempt
                logs.warning("relay_waiting_for_database", error=error, attempt=failures)
                last_error = error
            await self.supervisor.sleep(DATABASE_RETRY.delay(failures))
        return None

    async def _new_pool(self) -> AsyncConnectionPool:
        s = self.settings
        # behind a transaction-mode pooler every statement may meet another server session
        prepare = {} if s.listen else {"prepare_threshold": None}
        pool = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=s.pool_size,
            open=False,
            kwargs={"application_name": "pgpulse-relay", **prepare},
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=3600,
        )
        try:
            await pool.open(wait=True, timeout=30)
        except Exception as exc:
            await pool.close()
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        return pool

    @property
    def _registry(self) -> Registry:
        """The regions, made once the database is reached: before anything runs."""
        assert self.registry is not None
        return self.registry

    async def _run(self, store: Outbox) -> None:
        s, registry, supervisor = self.settings, self._registry, self.supervisor
        sweeper = Sweeper(
            store,
            self.counts,
            supervisor,
            interval_s=max(s.poll_interval_s, 1.0) * 2,
            wake=registry.wake_all,
        )
        try:
            await registry.refresh(announce=False)
        except psycopg.Error as exc:
            raise DatabaseError(describe(exc)) from exc
        if not registry.regions:
            raise ConfigError(
                "no region in pgpulse.regions (enabled or not) has an Upstash endpoint configured"
            )
        logs.event(
            "relay_started",
            regions=sorted(registry.regions),
            once=self.once,
            batch_size=s.batch_size,
            concurrency=s.concurrency,
            listen=s.listen,
            pool_size=s.pool_size,
        )
        # a claim holds its connection while the publish takes a second one (push intents):
        # at most half the pool claims at once, so a claim can never wait on its own pool
        self._claim_slots = asyncio.Semaphore(max(1, (s.pool_size - 1) // 2))
        if self.once:
            try:
                started_at = await store.now()
                await sweeper.sweep()
            except psycopg.Error as exc:
                raise DatabaseError(describe(exc)) from exc
        await maintain_once(store, self.history)  # the history's span, before any result
        self._start_drainers(store)
        if not self.once:
            follower = Follower(
                store,
                supervisor,
                interval_s=max(s.poll_interval_s, 1.0),
                wake_drainers=registry.wake_all,
            )
            supervisor.spawn(follower.run(), "follow")
            supervisor.spawn(maintain_results(store, self.history, supervisor), "results")
            if s.listen:  # off behind a transaction-mode pooler: the poll interval wakes
                notifier = Notifier(self.dsn, supervisor, registry.nudge_all, follower.wake)
                supervisor.spawn(notifier.run(), "listen")
            supervisor.spawn(self._watch_regions(store), "regions")
            supervisor.spawn(DepthSampler(registry, store, s, supervisor).run(), "depth")
            supervisor.spawn(ClockWatch(registry, store, s, supervisor).run(), "clocks")
            supervisor.spawn(sweeper.run(), "maintain")
        await supervisor.join_drainers()
        if self.once:
            registry.reconcile_health()
            requeued = set().union(*(d.requeued for d in self.drainers))
            rows = await store.undelivered(started_at, list(requeued))
            self.undelivered = once_verdict(rows, registry.regions, self.counts.dead_lettered)

    def _start_drainers(self, store: Outbox) -> None:
        """Drainers (of the outbox, and of the results list) for every region that has none
        yet (regions may be added live)."""
        for code, region in self._registry.regions.items():
            if code not in self.results_drains:
                drain = self.results_drains[code] = ResultsDrain(
                    region,
                    store,
                    self.settings,
                    self.supervisor,
                    self.counts,
                    self.history,
                    relay_id=self.relay_id,
                    once=self.once,
                )
                if self.once:  # what waits now, joined like the drainers
                    self.supervisor.start_drainers(f"results:{code}", [drain.run()])
                else:
                    self.supervisor.spawn(drain.run(), f"results:{code}")
            if self.supervisor.has_drainers(code):
                continue
            drainer = Drainer(
                region,
                self._registry,
                store,
                self.settings,
                self.supervisor,
                self.counts,
                claim_slots=self._claim_slots,
                once=self.once,
                on_batch=self.on_batch,
            )
            self.drainers.append(drainer)
            self.supervisor.start_drainers(
                code, [drainer.run() for _ in range(self.settings.concurrency)]
            )

    async def _watch_regions(self, store: Outbox) -> None:
        """Picks up region changes (enabled, fallback, default, new regions)."""
        while not self.supervisor.stopping:
            await self.supervisor.sleep(max(self.settings.poll_interval_s, 1.0))
            try:
                await self._registry.refresh()
            except psycopg.Error:
                continue
            self._start_drainers(store)
            self._registry.reconcile_health()


def once_verdict(rows: list[Undelivered], regions: dict[str, Region], dead: int) -> str | None:
    """Why `--once` leaves jobs behind that were due when it started (or that it put back
    for a later attempt), one line; None when it delivered everything it could."""
    if not rows:
        return (
            (f"{dead} job(s) failed their last attempt and were dead-lettered (pgpulse dlq list)")
            if dead
            else None
        )
    refused, others = [], []  # a refused token first: the likeliest mistake
    for row in rows:
        code, region = row.region, regions.get(row.region)
        if region is not None and region.refused:
            refused.append(
                f"{region.refused}; check UPSTASH_REDIS_REST_TOKEN_"
                f"{env_suffix(code)} (or UPSTASH_REDIS_REST_TOKEN); its jobs stay "
                "in the outbox"
            )
        elif region is None:
            others.append(f"region {code}: no Upstash endpoint configured here, or no such region")
        else:
            last_error = region.client.last_error or region.last_error
            if row.requeued:
                others.append(
                    f"region {code}: {row.requeued} job(s) failed and wait for a "
                    "later attempt" + (f" ({last_error})" if last_error else "")
                )
            else:
                others.append(last_error or f"region {code}: breaker {region.breaker.state.value}")
    reasons = refused + others
    if not refused:
        reasons[0] = f"{sum(row.due for row in rows)} due job(s) not delivered: {reasons[0]}"
    return "; ".join(reasons) + (f"; {dead} job(s) dead-lettered" if dead else "")
