"""Queue depth: each region's backlog in Redis, sampled; over the threshold the region is
marked degraded and the tick's round-robin prefers the others."""

from __future__ import annotations

import contextlib

import psycopg

from relay import metrics
from relay.config import RelaySettings
from relay.errors import PublishError
from relay.outbox import Outbox
from relay.queue import CRITICALITIES, queue_key
from relay.regions import Registry
from relay.supervisor import Supervisor


class DepthSampler:
    def __init__(
        self, registry: Registry, store: Outbox, settings: RelaySettings, supervisor: Supervisor
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.supervisor = supervisor

    async def run(self) -> None:
        while not self.supervisor.stopping:
            for region in list(self.registry.regions.values()):
                if region.breaker.is_open():
                    continue
                with contextlib.suppress(PublishError, psycopg.Error):
                    replies = await region.client.pipeline(
                        [["LLEN", queue_key(region.code, c)] for c in CRITICALITIES]
                    )
                    depth = sum(r.get("result") or 0 for r in replies)
                    metrics.queue_depth.labels(region.code).set(depth)
                    await self.store.set_region_degraded(
                        region.code, depth > self.settings.backlog_degraded
                    )
            await self.supervisor.sleep(self.settings.depth_interval_s)
