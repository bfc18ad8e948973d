"""Wake-ups: LISTEN pgpulse_outbox and pgpulse_follow on a dedicated connection; every
NOTIFY wakes, instead of the poll interval, the drainers (a tick wrote jobs, a reroute moved
some) or the follower (a bulk write of the product logged rows to follow)."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from relay import logs
from relay.backoff import Backoff
from relay.db import describe
from relay.queries import queries
from relay.supervisor import Supervisor

# a lost LISTEN connection: connect again after 0.1 s, 0.2 s ... at most 5 s
RECONNECT = Backoff(first=0.1, most=5.0)


class Notifier:
    def __init__(
        self,
        dsn: str,
        supervisor: Supervisor,
        wake: Callable[[], None],
        wake_follower: Callable[[], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.supervisor = supervisor
        self.wake = wake
        self.wake_follower = wake_follower

    async def run(self) -> None:
        """Listens until stop; reconnects when the connection is lost."""
        failures = 0
        while not self.supervisor.stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="pgpulse-relay-listen",
                ) as conn:
                    # LISTEN resolves no name: nothing to pin on this connection
                    await conn.execute(queries()["listen_outbox"])
                    if self.wake_follower:
                        await conn.execute(queries()["listen_follow"])
                        self.wake_follower()
                    failures = 0
                    self.wake()  # jobs may have arrived while we were not listening
                    async for note in conn.notifies():
                        if note.channel == "pgpulse_follow" and self.wake_follower:
                            self.wake_follower()
                        else:
                            self.wake()
            except psycopg.Error as exc:
                logs.warning("listen_lost", error=describe(exc))
                failures += 1
                await self.supervisor.sleep(RECONNECT.delay(failures))
