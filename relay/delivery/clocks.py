"""Clock skew: how far this host's clock and each region's Redis clock are from PostgreSQL's.

PostgreSQL's clock stamps every job (scheduled_for, expires_at); Redis's clock judges expiry
(the push script compares expires_at with TIME). A Redis clock ahead of PostgreSQL's by more
than a job's life drops every job as expired, silently. Each remote clock is read once
between two readings of this host's clock: the midpoint is the best guess of when it was
read, and the truth lies within half the round trip of it (the uncertainty reported).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from relay import logs
from relay.db import DictConnection, one
from relay.errors import PublishError
from relay.ops import metrics

INTERVAL_S = 60.0  # the relay measures once a minute: clocks drift slowly


@dataclass(frozen=True)
class Skew:
    """How far one clock is ahead of another (negative: behind), give or take uncertainty."""

    seconds: float
    uncertainty: float

    def against(self, other: Skew) -> Skew:
        """Both measured against this host: this clock against the other's."""
        return Skew(self.seconds - other.seconds, self.uncertainty + other.uncertainty)

    def describe(self, clock: str, reference: str) -> str:
        way = "ahead of" if self.seconds >= 0 else "behind"
        return (
            f"{clock} clock {way} {reference} by {abs(self.seconds):.3f} s "
            f"(±{self.uncertainty:.3f} s)"
        )


def skew(sent: float, remote: float, received: float) -> Skew:
    """The remote clock read `remote` between local times `sent` and `received`."""
    return Skew(remote - (sent + received) / 2, (received - sent) / 2)


def redis_seconds(reply: Any) -> float:
    """Redis TIME's reply: [unix seconds, microseconds], as strings."""
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


async def redis_skew(client, now: Callable[[], float] = time.time) -> Skew:
    """A region's Redis clock against this host's (client: relay.delivery.upstash.UpstashClient)."""
    sent = now()
    reply = await client.command("TIME")
    return skew(sent, redis_seconds(reply), now())


def postgres_skew(conn: DictConnection, now: Callable[[], float] = time.time) -> Skew:
    """PostgreSQL's clock against this host's, on a sync connection with dict rows."""
    sent = now()
    row = one(conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS t").fetchone())
    return skew(sent, row["t"], now())


class ClockWatch:
    """The relay's side task: once a minute, PostgreSQL's clock against this host's and
    against each region's Redis; exported as pgpulse_clock_skew_seconds, logged as a
    warning when past PGPULSE_CLOCK_SKEW_WARN_S (once per change of verdict)."""

    def __init__(self, registry, store, settings, supervisor, interval_s: float = INTERVAL_S):
        self.registry = registry
        self.store = store  # relay.delivery.outbox.Outbox
        self.warn_s = settings.clock_skew_warn_s
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.warned: dict[tuple[str, str], bool] = {}
        metrics.clock_skew_warn.set(self.warn_s)

    async def run(self) -> None:
        while not self.supervisor.stopping:
            await self.measure()
            await self.supervisor.sleep(self.interval_s)

    async def measure(self) -> None:
        try:
            sent = time.time()
            database = skew(sent, await self.store.clock(), time.time())
        except psycopg.Error:
            return  # the database is down: nothing to compare with
        self.report("host", "", Skew(-database.seconds, database.uncertainty))
        for region in list(self.registry.regions.values()):
            if region.breaker.is_open():
                continue
            try:
                redis = await redis_skew(region.client)
            except (PublishError, ValueError, TypeError):
                continue  # unreachable, or a TIME reply of the wrong shape
            self.report("redis", region.code, redis.against(database))

    def report(self, clock: str, region: str, found: Skew) -> None:
        """found: `clock` against PostgreSQL's."""
        metrics.clock_skew.labels(clock, region).set(found.seconds)
        metrics.clock_skew_uncertainty.labels(clock, region).set(found.uncertainty)
        past = abs(found.seconds) > self.warn_s
        if past != self.warned.get((clock, region), False):
            self.warned[(clock, region)] = past
            fields = dict(
                clock=clock,
                region=region or None,
                skew_s=round(found.seconds, 3),
                uncertainty_s=round(found.uncertainty, 3),
                warn_s=self.warn_s,
            )
            if past:
                logs.warning("clock_skew", **fields)
            else:
                logs.event("clock_skew_ok", **fields)
