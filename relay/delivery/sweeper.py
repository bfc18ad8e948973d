"""Outbox upkeep no region's drainer does: expired jobs deleted and counted wherever they
are (also in regions no relay drains), records swept, and jobs of deleted, renamed or
disabled regions moved to where their monitor's jobs go now."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from relay import logs
from relay.db import describe
from relay.delivery.outbox import Outbox
from relay.delivery.outcomes import Counts
from relay.ops import metrics
from relay.supervisor import Supervisor

CHUNK = 5000  # rows per statement


class Sweeper:
    def __init__(
        self,
        store: Outbox,
        counts: Counts,
        supervisor: Supervisor,
        *,
        interval_s: float,
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.counts = counts
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.wake = wake  # the drainers: rerouted jobs arrived

    async def sweep(self) -> None:
        while True:
            swept = await self.store.sweep_expired(CHUNK)
            for row in swept:
                self.counts.expired += row.expired
                metrics.expired.labels(row.region).inc(row.expired)
                logs.event("jobs_expired", region=row.region, count=row.expired, swept=True)
            if sum(row.expired for row in swept) < CHUNK:
                break
        await self.store.sweep_records()
        orphans = await self.store.reroute_orphans(CHUNK)
        if orphans.moved:
            logs.event("orphans_rerouted", count=orphans.moved, kept=orphans.inserted)
            self.wake()

    async def run(self) -> None:
        while not self.supervisor.stopping:
            try:
                await self.sweep()
            except psycopg.Error as exc:
                logs.warning("maintenance_failed", error=describe(exc))
            await self.supervisor.sleep(self.interval_s)
