"""Product rows that bulk writes logged instead of following them in their own statement
(pgpulse.follow_log): followed here, a moment later, when a NOTIFY pgpulse_follow wakes the
relay and every poll interval besides (a missed notification, PGPULSE_LISTEN=off)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg

from relay import logs
from relay.db import describe
from relay.delivery.outbox import Outbox
from relay.supervisor import Supervisor

BATCH = 10_000  # rows per transaction: a bulk write of a million is followed in steps


class Follower:
    def __init__(
        self,
        store: Outbox,
        supervisor: Supervisor,
        *,
        interval_s: float,
        wake_drainers: Callable[[], None],
    ) -> None:
        self.store = store
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.wake_drainers = wake_drainers  # first jobs may have been written
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def follow(self) -> int:
        """Follows everything logged so far; returns the rows followed."""
        total = 0
        while not self.supervisor.stopping:
            followed = await self.store.follow_apply(BATCH)
            total += followed
            if followed < BATCH:
                break
        if total:
            logs.event("bulk_writes_followed", rows=total)
            self.wake_drainers()
        return total

    async def run(self) -> None:
        while not self.supervisor.stopping:
            self._woken.clear()
            try:
                await self.follow()
            except psycopg.Error as exc:
                logs.warning("follow_failed", error=describe(exc))
            sleep = asyncio.ensure_future(self.supervisor.sleep(self.interval_s))
            woken = asyncio.ensure_future(self._woken.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()
