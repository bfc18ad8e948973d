"""One region's drain: claim a batch, publish it, commit; then wait for more work.

The claim deletes the rows in a transaction that commits only after the publish: a crash
before COMMIT puts them back, and the push script's dedup key makes a second publish a
no-op. While the region's breaker is open its jobs that may fall back go to the fallback
region; the half-open probe is a batch (or a PING) that goes to the region itself."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field

import psycopg

from relay import logs
from relay.backoff import Backoff
from relay.config import RelaySettings
from relay.db import describe
from relay.delivery.breaker import State
from relay.delivery.outbox import Job, Outbox
from relay.delivery.outcomes import (
    DUPLICATE,
    EXPIRED,
    FAILED,
    HELD,
    PUSHED,
    WAIT,
    BatchListener,
    Counts,
    Outcome,
    PublishedBatch,
    Settlement,
    settle,
)
from relay.delivery.publish import Publisher
from relay.delivery.regions import Region, Registry
from relay.errors import PublishError, RegionRefused, TokenRefused
from relay.ops import metrics
from relay.supervisor import Supervisor


@dataclass
class Drained:
    """One claimed batch: every job, the live ones (not expired), an outcome per live job,
    the positions (into live) each destination region took, and what went back."""

    jobs: list[Job]
    live: list[Job]
    outcomes: list[Outcome] = field(default_factory=list)
    groups: dict[Region, list[int]] = field(default_factory=dict)
    intents: dict[Region, int] = field(default_factory=dict)  # push intent id per group
    settlement: Settlement = field(default_factory=Settlement)


# after a failed round: the database 0.2 s, 0.4 s ... at most 5 s; a publish at most 2 s
DATABASE_RETRY = Backoff(first=0.2, most=5.0)
PUBLISH_RETRY = Backoff(first=0.2, most=2.0)
# due rows that other workers hold: look again after 50 ms, 100 ms ... at most 1 s
HELD_ROWS = Backoff(first=0.05, most=1.0)


class Drainer:
    """Drains one region; run() is one worker (a region has settings.concurrency)."""

    def __init__(
        self,
        region: Region,
        registry: Registry,
        store: Outbox,
        settings: RelaySettings,
        supervisor: Supervisor,
        counts: Counts,
        *,
        claim_slots: asyncio.Semaphore,
        once: bool = False,
        on_batch: BatchListener | None = None,
    ) -> None:
        self.region = region
        self.registry = registry
        self.store = store
        self.settings = settings
        self.supervisor = supervisor
        self.counts = counts
        self.claim_slots = claim_slots  # claims at once, over every region (see Relay)
        self.once = once
        self.on_batch = on_batch
        self.publisher = Publisher(settings.max_request_bytes, settings.dedup_margin_s)
        self.requeued: set[str] = set()  # --once: jobs put back for a later attempt

    async def run(self) -> None:
        region = self.region
        failures = 0
        while not self.supervisor.stopping:
            # cleared before the claim: a NOTIFY arriving after it is not lost
            region.wake.clear()
            try:
                claimed = await self.drain_once()
                failures = 0
            except psycopg.Error as exc:
                failures += 1
                logs.warning("database_error", region=region.code, error=describe(exc))
                await self.supervisor.sleep(DATABASE_RETRY.delay(failures))
                continue
            except PublishError as exc:
                failures += 1
                if isinstance(exc, TokenRefused):
                    self.registry.token_refused(exc)
                else:
                    region.last_error = str(exc)
                    logs.warning("publish_failed", region=region.code, error=str(exc))
                if (
                    self.once
                    and region.breaker.is_open()
                    and self.registry.fallback_for(region) is None
                ):
                    return
                await self.supervisor.sleep(PUBLISH_RETRY.delay(failures))
                continue
            if self.once:  # only what is due now: claim again until nothing is left
                if claimed == 0:
                    return
                continue
            if claimed >= self.settings.batch_size:
                region.nudge()  # a backlog: one more of the region's workers helps
                continue
            await self.wait_for_work(claimed)

    async def drain_once(self) -> int:
        """Claims, publishes and commits one batch; returns the number of jobs claimed.
        After committing a batch the region refused as a whole, or never got (a push that
        surely never ran: its jobs went back, its push intent went), raises RegionRefused or
        the error of that request."""
        region = self.region
        if not region.enabled:  # an operator took it out: its jobs follow their routing
            return 0
        granted = region.breaker.allow()
        target = region if granted else self.registry.fallback_for(region)
        if target is None:
            return 0
        try:
            batch = await self._claim_and_publish(
                target, fallback_only=not granted, probing=bool(granted and granted.probe)
            )
        finally:
            if granted:  # a probe that reached no one lets the next caller probe
                region.breaker.release(granted)
        self._account(batch, target)
        held = [o for o in batch.outcomes if o.kind == HELD]
        if held:
            raise held[0].cause or RegionRefused(f"region {target.code}: {held[0].error}")
        return len(batch.jobs)

    async def _claim_and_publish(
        self, target: Region, *, fallback_only: bool, probing: bool
    ) -> Drained:
        """The claim's transaction: claim, publish to each destination, put the failures
        back; commits on return."""
        region, s = self.region, self.settings
        # rerouting: a job whose push to its own region may have happened waits for it
        held_by = region.code if fallback_only and s.unclear_push == "wait" else None
        async with (
            self.claim_slots,
            self.store.claim(
                region.code,
                limit=s.batch_size,
                fallback_only=fallback_only,
                held_by=held_by,
                lease_s=s.claim_lease_s,
            ) as claim,
        ):
            batch = Drained(claim.jobs, [job for job in claim.jobs if not job.expired])
            if not batch.jobs:
                if probing:
                    await region.client.command("PING")  # the probe, when there is no batch
                return batch
            logs.event(
                "batch_claimed",
                logging.DEBUG,
                region=region.code,
                jobs=len(batch.jobs),
                target=target.code,
            )
            batch.outcomes = [Outcome(WAIT)] * len(batch.live)
            batch.groups = self.destinations(target, batch.live)
            try:
                async with asyncio.timeout(max(s.claim_lease_s - 1.0, 0.5)):
                    for dest, positions in batch.groups.items():
                        await self._publish(batch, dest, positions)
            except TimeoutError:
                raise PublishError(
                    f"region {target.code}: publish outlasted the claim lease "
                    f"({s.claim_lease_s:g} s); the batch goes back"
                ) from None
            batch.settlement = settle(batch.live, batch.outcomes, s.max_attempts)
            if self.once:  # --once's verdict names what it put back
                self.requeued.update(r.job.job_id for r in batch.settlement.requeue)
            await claim.settle(
                batch.settlement.requeue, batch.settlement.dead, self._outcome_known(batch)
            )
        return batch

    def _outcome_known(self, batch: Drained) -> list[int]:
        """The push intents that go with the claim's commit: every outcome of their jobs'
        pushes is known (an unreadable reply keeps its group's intent until it expires)."""
        return [
            intent
            for dest, intent in batch.intents.items()
            if not any(batch.outcomes[i].unclear for i in batch.groups[dest])
        ]

    async def _publish(self, batch: Drained, dest: Region, positions: list[int]) -> None:
        group = [batch.live[i] for i in positions]
        if self.settings.unclear_push == "wait":
            # committed before the push: should its outcome stay unknown (a lost answer,
            # a killed relay), these jobs go nowhere else
            batch.intents[dest] = await self.store.record_intent(dest.code, group)
        published = await self.publisher.publish(dest, group, rerouted=dest is not self.region)
        for i, outcome in zip(positions, published, strict=True):
            batch.outcomes[i] = outcome

    def destinations(self, target: Region, jobs: list[Job]) -> dict[Region, list[int]]:
        """Where each job goes: the batch's target, unless a push of it may already have
        reached another region (PGPULSE_UNCLEAR_PUSH=wait): then that region, or nowhere
        for now (it waits) while that region is down. Positions into jobs, per region."""
        groups: dict[Region, list[int]] = {}
        for i, job in enumerate(jobs):
            dest = target
            if (
                self.settings.unclear_push == "wait"
                and job.pinned_to
                and job.pinned_to != target.code
            ):
                pinned = self.registry.regions.get(job.pinned_to)
                if pinned is None or not pinned.enabled or pinned.breaker.state is not State.CLOSED:
                    continue  # stays WAIT
                dest = pinned
            groups.setdefault(dest, []).append(i)
        return groups

    def _account(self, batch: Drained, target: Region) -> None:
        """Counters, metrics and logs of a committed batch; the batch listener hears of the
        jobs that reached a queue."""
        region, c = self.region, self.counts
        for dest, positions in batch.groups.items():
            self._account_group(
                dest, [batch.live[i] for i in positions], [batch.outcomes[i] for i in positions]
            )
        dead = len(batch.settlement.dead)
        if dead:
            c.dead_lettered += dead
            metrics.dead_lettered.labels(region.code).inc(dead)
        c.held += sum(1 for o in batch.outcomes if o.kind == WAIT)
        expired = len(batch.jobs) - len(batch.live)  # expired before the claim
        if expired:
            c.expired += expired
            metrics.expired.labels(region.code).inc(expired)
            logs.event("jobs_expired", region=region.code, count=expired)

    def _account_group(self, target: Region, live: list[Job], outcomes: list[Outcome]) -> None:
        region, c = self.region, self.counts
        c.batches += 1 if live else 0
        now = time.time()
        kinds = collections.Counter(o.kind for o in outcomes)
        ok = [job for job, o in zip(live, outcomes) if o.kind in (PUSHED, DUPLICATE)]
        expired = kinds[EXPIRED]  # expired by the time the region saw it
        n_failed = kinds[FAILED]
        c.published += len(ok)  # pushed now, or found pushed before (duplicates)
        c.duplicates += kinds[DUPLICATE]
        c.failed += n_failed
        c.held += kinds[HELD]
        c.expired += expired
        if kinds[DUPLICATE]:
            metrics.duplicates.labels(target.code).inc(kinds[DUPLICATE])
        if expired:
            metrics.expired.labels(region.code).inc(expired)
            logs.event("jobs_expired", region=region.code, count=expired)
        if n_failed:
            metrics.failed.labels(target.code).inc(n_failed)
        if not ok:
            return
        metrics.published.labels(target.code).inc(len(ok))
        if target is not region:
            c.rerouted += len(ok)
            metrics.rerouted.labels(region.code, target.code).inc(len(ok))
            logs.event("jobs_rerouted", region=region.code, to=target.code, count=len(ok))
        metrics.schedule_lag.observe_many(target.code, [now - job.scheduled_for_s for job in ok])
        if self.on_batch:
            self.on_batch(PublishedBatch(target.code, ok, now))
        logs.event(
            "batch_published",
            region=target.code,
            jobs=len(ok),
            failed=n_failed,
            held=kinds[HELD],
            expired=expired,
        )

    # ------------------------------------------------------------------ waiting

    async def wait_for_work(self, claimed: int) -> None:
        """Sleeps until the next deliver_at, a NOTIFY, the breaker's probe time or stop."""
        timeout = await self.wake_timeout(claimed)
        mine = asyncio.Event()  # a nudge for this worker alone (Region.nudge)
        self.region.idle.append(mine)
        waits = [
            asyncio.ensure_future(self.region.wake.wait()),
            asyncio.ensure_future(mine.wait()),
            asyncio.ensure_future(self.supervisor.stop.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            with contextlib.suppress(ValueError):  # gone when the nudge picked it
                self.region.idle.remove(mine)
            if self.region.due_timer is asyncio.current_task():
                self.region.due_timer = None

    async def wake_timeout(self, claimed: int) -> float:
        """How long to sleep after a batch of `claimed` jobs, if nothing wakes us first."""
        region = self.region
        timeout = self.settings.poll_interval_s
        closed = region.breaker.state is State.CLOSED
        if not closed:
            timeout = min(timeout, max(region.breaker.seconds_until_probe(), 0.05))
        undated = timeout  # without the next due job's time
        if closed or self.registry.fallback_for(region) is not None:
            try:  # while the breaker is open, only jobs that may reroute count
                due_in = await self.store.next_due(region.code, fallback_only=not closed)
                if due_in is not None:
                    timeout = min(timeout, max(due_in, 0.0))
                if claimed == 0 and due_in is not None and due_in <= 0:
                    # due rows that the claim skipped: another worker or relay holds them
                    # (publishing, or frozen). Back off instead of claiming in a loop.
                    region.idle_rounds += 1
                    timeout = HELD_ROWS.delay(region.idle_rounds)
                else:
                    region.idle_rounds = 0
                    if due_in is not None and not self._take_due_timer(max(due_in, 0.02)):
                        # one worker a region follows the due times (more only claim the
                        # same few jobs at more cost); the others wait for a wake-up: a
                        # NOTIFY, or a full batch (a backlog they help with)
                        timeout = undated
            except psycopg.Error:
                timeout = 0.5
        # a short floor gathers jobs falling due together into one batch
        return max(timeout, 0.02 if claimed or timeout <= 0 else 0.0)

    def _take_due_timer(self, due_in: float) -> bool:
        """Whether this worker (task) sleeps until the region's next due job: yes unless
        another one already sleeps until then (or earlier)."""
        region, me = self.region, asyncio.current_task()
        wake_at = asyncio.get_running_loop().time() + due_in
        holder = region.due_timer
        if holder is None or holder is me or holder.done() or wake_at < region.due_timer_at:
            region.due_timer, region.due_timer_at = me, wake_at
            return True
        return False
