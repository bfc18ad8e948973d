"""The facts the public endpoints show, read by ONE loop over one connection and cached.

`/readyz`, `/metrics` (and the status page) read `FactsCache.snapshot`, never the database:
however many requests arrive, this process holds one database connection for them and runs
one read per `facts_interval_s`, each statement bounded by a statement timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay import logs
from relay.db import AsyncDictConnection, apinned, describe
from relay.ops import metrics
from relay.ops.facts import read_facts

STATEMENT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Snapshot:
    """What this process last learnt about the database: plain data, safe to render.

    - `facts`: the dict of `relay.ops.facts.read_facts` from the latest successful read (kept
      while the database is down, so a page can show the last known state), None before
      the first one. Keys: backlog (rows: region, due, oldest_due_age_s), last_tick_age_s,
      latest_tick, latest_finished_tick, dead_letters {region: n}, unhealthy_regions
      {region: seconds}.
    - `read_at`: unix time of that read (None: never); `attempted_at`: of the latest try.
    - `database_ok`: the latest try succeeded.
    - `error`: why it failed, in words fit for an unauthenticated reader (an SQLSTATE or
      "cannot connect"; never a host, port, user or password). None when it succeeded.
    """

    facts: dict[str, Any] | None = None
    read_at: float | None = None
    attempted_at: float | None = None
    database_ok: bool = False
    error: str | None = "not read yet"

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the facts were read; None if never."""
        return None if self.read_at is None else max(0.0, (now or time.time()) - self.read_at)


def public_reason(exc: BaseException) -> str:
    """A failure in words that reveal nothing about where the database is or who we are."""
    sqlstate = getattr(getattr(exc, "diag", None), "sqlstate", None)
    if sqlstate == "57014":
        return "a query ran past the statement timeout"
    if sqlstate:
        return f"the database refused (SQLSTATE {sqlstate})"
    if isinstance(exc, (psycopg.OperationalError, OSError)):
        return "cannot connect to the database"
    return f"database error ({type(exc).__name__})"


class FactsCache:
    """Refreshes `snapshot` every `interval_s` over one long-lived connection."""

    def __init__(
        self, dsn: str, interval_s: float, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
    ) -> None:
        self.dsn = dsn
        self.interval_s = interval_s
        self.statement_timeout_ms = statement_timeout_ms
        self.snapshot = Snapshot()
        self.conn: AsyncDictConnection | None = None
        self.refreshed = asyncio.Event()  # set after every attempt (tests, first readiness)

    async def refresh(self) -> Snapshot:
        now = time.time()
        try:
            if self.conn is None or self.conn.closed:
                # nothing session-level (no startup options, no prepared statements; the
                # search_path and timeout are the transaction's), so the loop also works
                # through a transaction-mode pooler (PgBouncer)
                self.conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=5,
                    application_name=f"pgpulse-facts-{os.getpid()}",
                    prepare_threshold=None,
                )
            async with apinned(self.conn, statement_timeout_ms=self.statement_timeout_ms):
                facts = await read_facts(self.conn)
        except (psycopg.Error, OSError) as exc:
            if self.snapshot.database_ok or self.snapshot.attempted_at is None:
                logs.warning(
                    "facts_read_failed",
                    error=describe(exc) if isinstance(exc, psycopg.Error) else str(exc),
                )  # once per outage; redacted by logs
            await self._drop()
            self.snapshot = Snapshot(
                self.snapshot.facts, self.snapshot.read_at, now, False, public_reason(exc)
            )
            metrics.facts_ok.set(0)
        else:
            self.snapshot = Snapshot(facts, now, now, True, None)
            metrics.publish_facts(facts)
            metrics.facts_ok.set(1)
        self.refreshed.set()
        return self.snapshot

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                except Exception as exc:  # a bug in one round must not end the loop
                    logs.error("facts_round_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            await self._drop()

    async def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None
