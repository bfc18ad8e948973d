"""Each region sampled every PGPULSE_DEPTH_INTERVAL_S in one command (relay/scripts/sample.lua):
its queue depth (over the threshold the region is degraded and the tick's round-robin
prefers the others), its workers (relay.delivery.worker_presence: absent regions are routed
around, slow ones are degraded) and its results list (the region's results drain wakes)."""

from __future__ import annotations

import contextlib

import psycopg

from relay import logs
from relay.config import RelaySettings
from relay.db import describe
from relay.delivery.outbox import Outbox
from relay.delivery.regions import Region, Registry
from relay.delivery.worker_presence import ALIVE_MS, Sample, judge, sample_keys
from relay.errors import PgPulseError
from relay.ops import metrics
from relay.supervisor import Supervisor
from relay.worker.protocol import Scripts


class DepthSampler:
    def __init__(
        self, registry: Registry, store: Outbox, settings: RelaySettings, supervisor: Supervisor
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.supervisor = supervisor
        self.scripts: dict[str, Scripts] = {}

    async def run(self) -> None:
        while not self.supervisor.stopping:
            for region in list(self.registry.regions.values()):
                if region.breaker.is_open():
                    continue
                with contextlib.suppress(PgPulseError, ValueError, psycopg.Error):
                    await self.sample(region)
            await self.supervisor.sleep(self.settings.depth_interval_s)

    async def sample(self, region: Region) -> Sample:
        scripts = self.scripts.get(region.code)
        if scripts is None or scripts.client is not region.client:
            scripts = self.scripts[region.code] = Scripts(region.client, region.code)
        sample = Sample.from_reply(
            await scripts.call("sample", sample_keys(region.code), [ALIVE_MS])
        )
        code = region.code
        metrics.queue_depth.labels(code).set(sample.depth)
        metrics.workers_alive.labels(code).set(sample.alive)
        metrics.results_backlog.labels(code).set(sample.results)
        metrics.results_dropped.labels(code).set(sample.results_dropped)
        if sample.results:
            region.results_wake.set()
        verdict = judge(sample, self.settings.workers_absent_s)
        await self.store.set_region_degraded(
            code, sample.depth > self.settings.backlog_degraded or verdict.slow
        )
        await self.workers(region, verdict.absent, verdict.reason)
        return sample

    async def workers(self, region: Region, absent: bool, reason: str) -> None:
        """Records the verdict; a change is logged, and the region's waiting jobs follow it:
        away to where its monitors' jobs go now, or home again."""
        code = region.code
        if await self.store.set_region_workers(code, absent):
            if absent:
                logs.warning("workers_absent", region=code, reason=reason)
            else:
                logs.event("workers_returned", region=code)
                self.supervisor.spawn(self.registry.reroute_home(region), "home")
        region.workers_absent = absent
        if absent:  # every round: jobs a tick wrote just before it saw the region absent
            try:
                moved = await self.store.reroute_away(code)
            except psycopg.Error as exc:
                logs.warning("reroute_away_failed", region=code, error=describe(exc))
                return
            if moved.inserted:
                logs.event("jobs_rerouted_from_absent_workers", region=code, count=moved.inserted)
                self.registry.wake_all()
