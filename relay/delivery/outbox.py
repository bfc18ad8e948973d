"""The relay's side of the database: one method per named query (sql/queries.sql), named
rows in and out. The relay's other modules never hold SQL or read a row by position."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from relay.backoff import Backoff
from relay.db import apinned, one, pooled
from relay.queries import queries

T = TypeVar("T")

# a failed job is due again after 1 s, 2 s, 4 s ... at most 60 s, each ±20%
JOB_RETRY = Backoff(first=1.0, most=60.0, jitter=0.2)


def retry_backoff_s(attempts: int) -> float:
    """Backoff before a failed job is due again (attempts: its failed attempts so far)."""
    return JOB_RETRY.delay(attempts)


class Job(NamedTuple):
    """One claimed outbox row, with the JSON the queue receives (built by the claim). A
    tuple, read straight from the claim's row (job_rows): a batch is a thousand of them.
    Times are unix seconds."""

    job_id: str
    monitor_id: str
    region: str
    criticality: str
    scheduled_for_s: float
    deliver_at_s: float
    expires_at_s: float
    attempts: int
    payload: str | None  # None: job_json without the job's own fields (the claim says)
    allow_fallback: bool
    expired: bool
    pinned_to: str | None  # a region a push of this job may have reached (push_intents)
    job_json: str


def job_rows(cursor: Any) -> Callable[[Sequence[Any]], Job]:
    """A psycopg row factory for the claim: its columns must be Job's fields, in order
    (checked once per query, not per row)."""
    names = tuple(column.name for column in cursor.description or ())
    if names != Job._fields:
        raise RuntimeError(f"claim_due returns {names}, not Job's fields {Job._fields}")
    return Job._make


@dataclass(frozen=True)
class Retry:
    """A claimed job going back: into the outbox for a later attempt, or to the dead
    letters. attempts is what its row will say; backoff_s, when it is due again."""

    job: Job
    error: str
    attempts: int
    backoff_s: float

    def params(self) -> dict[str, Any]:
        job = self.job
        return {
            "job_id": job.job_id,
            "monitor_id": job.monitor_id,
            "region": job.region,
            "criticality": job.criticality,
            "scheduled_for_s": job.scheduled_for_s,
            "deliver_at_s": job.deliver_at_s,
            "expires_at_s": job.expires_at_s,
            "allow_fallback": job.allow_fallback,
            "payload": job.payload,
            "job_json": job.job_json,
            "attempts": self.attempts,
            "error": self.error[:500],
            "backoff_s": self.backoff_s,
        }


@dataclass(frozen=True)
class RegionRow:
    code: str
    enabled: bool
    is_default: bool
    fallback_region: str | None
    healthy: bool
    degraded: bool
    weight: int
    workers_absent: bool = False
    workers_absent_s: float | None = None


@dataclass(frozen=True)
class Ingested:
    """What one batch of results did in PostgreSQL (see the ingest_results query)."""

    known: int  # of monitors pgpulse schedules (the others are left out)
    latest_written: int
    history_written: int
    outside_history: int  # history on, but no partition covers their slot


@dataclass(frozen=True)
class HistorySpan:
    """What pgpulse.results_maintain() answered: whether history is kept and the span of
    scheduled_for its partitions cover (None while history is off)."""

    history: bool
    retention_days: int
    covered_from: datetime | None
    covered_until: datetime | None
    created: int
    dropped: int
    problem: str | None


@dataclass(frozen=True)
class Undelivered:
    """Per region, jobs `relay --once` leaves behind: due when it started, or put back."""

    region: str
    due: int
    requeued: int


@dataclass(frozen=True)
class Swept:
    region: str
    expired: int


@dataclass(frozen=True)
class Moved:
    """Jobs a reroute took out of one region (moved) and wrote into another (inserted)."""

    moved: int
    inserted: int


def array_literal(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of values that need no quoting (uuids, numbers). Built
    here because psycopg adapts a list element by element (a regular expression each):
    for a batch's job ids that was a tenth of the relay's time per job."""
    return "{" + ",".join(items) + "}"


class Claim:
    """A claimed batch inside its transaction: the rows are gone from the outbox until the
    transaction ends; a commit makes that final, a rollback puts them back."""

    def __init__(self, conn: AsyncConnection, jobs: list[Job]) -> None:
        self._conn = conn
        self.jobs = jobs

    async def settle(
        self, requeue: list[Retry], dead: list[Retry], forget: Sequence[int] = ()
    ) -> None:
        """Jobs that failed go back for a later attempt or to the dead letters, in the
        claim's transaction (they never exist twice, nor nowhere); the push intents whose
        ids are in `forget` go with the commit (a rollback keeps them, as the pushes may
        have happened)."""
        async with self._conn.cursor() as cur:
            if forget:
                await cur.execute(
                    queries()["forget_intent"], {"ids": array_literal(str(i) for i in forget)}
                )
            if requeue:
                await cur.executemany(queries()["requeue"], [r.params() for r in requeue])
            if dead:
                await cur.executemany(queries()["dead_letter"], [r.params() for r in dead])


class Outbox:
    """The relay's named queries over a connection pool, each in a transaction whose
    search_path is pinned (relay.db.pooled)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _one(self, name: str, params: dict[str, Any] | None = None) -> dict | None:
        async with pooled(self.pool) as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries()[name], params or {})
            return await cur.fetchone()

    async def _all(self, name: str, row_type: type[T], params: dict | None = None) -> list[T]:
        async with (
            pooled(self.pool) as conn,
            conn.cursor(row_factory=class_row(row_type)) as cur,
        ):
            await cur.execute(queries()[name], params or {})
            return await cur.fetchall()

    async def _run(self, name: str, params: dict[str, Any] | None = None) -> None:
        async with pooled(self.pool) as conn:
            await conn.execute(queries()[name], params or {})

    # ------------------------------------------------------------------ the claim

    @contextlib.asynccontextmanager
    async def claim(
        self, region: str, *, limit: int, fallback_only: bool, held_by: str | None, lease_s: float
    ) -> AsyncIterator[Claim]:
        """Claims up to `limit` due jobs of a region (deleting them) in a transaction that
        commits when the block ends and rolls back if it raises. The transaction is a lease:
        idle for lease_s (a frozen relay), PostgreSQL ends it and the rows go back."""
        async with pooled(self.pool) as conn:
            await conn.execute(queries()["claim_lease"], {"ms": str(int(lease_s * 1000))})
            async with conn.cursor(row_factory=job_rows) as cur:
                await cur.execute(
                    queries()["claim_due"],
                    {
                        "region": region,
                        "limit": limit,
                        "fallback_only": fallback_only,
                        "held_by": held_by,
                    },
                )
                jobs = await cur.fetchall()
            yield Claim(conn, jobs)

    async def next_due(self, region: str, *, fallback_only: bool) -> float | None:
        """Seconds until the region's earliest job falls due (negative: overdue)."""
        row = one(await self._one("next_due", {"region": region, "fallback_only": fallback_only}))
        return row["seconds"]

    # ------------------------------------------------------------------ push intents

    async def record_intent(self, region: str, jobs: list[Job]) -> int:
        """Commits, before a push request, that these jobs may reach `region` from now on;
        returns the intent's id (see Claim.settle). The jobs are of one outbox region."""
        row = await self._one(
            "record_intent",
            {
                "region": region,
                "from_region": jobs[0].region,
                "job_ids": array_literal(job.job_id for job in jobs),
                "expires_at": max(job.expires_at_s for job in jobs),
            },
        )
        return one(row)["id"]

    # ------------------------------------------------------------------ regions

    async def regions(self) -> list[RegionRow]:
        return await self._all("regions", RegionRow)

    async def observe_region(
        self, region: str, relay: str, healthy: bool, ttl_s: float
    ) -> bool | None:
        """Records one relay's view of a region; the region's health when this changed it."""
        row = await self._one(
            "observe_region", {"region": region, "relay": relay, "healthy": healthy, "ttl_s": ttl_s}
        )
        return None if row is None else row["healthy"]

    async def set_region_workers(self, region: str, absent: bool) -> bool:
        """Records whether the region's workers are absent; True when this changed it."""
        row = await self._one("set_region_workers", {"region": region, "absent": absent})
        return row is not None

    async def reroute_away(self, region: str) -> Moved:
        """A region whose workers are absent: its waiting jobs that may fall back move."""
        return await self._reroute("reroute_away", {"region": region}, wake_on="inserted")

    async def set_region_degraded(self, region: str, degraded: bool) -> None:
        await self._run("set_region_degraded", {"region": region, "degraded": degraded})

    async def reroute_home(self, region: str) -> Moved:
        """A region is back: its monitors' jobs routed elsewhere come home (and wake)."""
        return await self._reroute("reroute_home", {"region": region}, wake_on="inserted")

    # ------------------------------------------------------------------ results

    async def results_id_type(self) -> str:
        return one(await self._one("results_id_type"))["id_type"]

    async def results_maintain(self) -> HistorySpan:
        return (await self._all("results_maintain", HistorySpan))[0]

    async def results_orphans(self, limit: int) -> int:
        return one(await self._one("results_orphans", {"limit": limit}))["deleted"]

    async def ingest_results(
        self, rows_json: str, span: HistorySpan | None, timeout_s: float
    ) -> Ingested:
        """One batch of results (a JSON array of results_latest rows), in one transaction
        that a statement timeout keeps within the drain's lease."""
        keep = span is not None and span.history and span.covered_from is not None
        covered = (span.covered_from, span.covered_until) if span is not None and keep else None
        async with (
            self.pool.connection() as conn,
            apinned(conn, statement_timeout_ms=int(timeout_s * 1000)),
            conn.cursor(row_factory=class_row(Ingested)) as cur,
        ):
            await cur.execute(
                queries()["ingest_results"],
                {
                    "rows": rows_json,
                    "history_from": covered[0] if covered else None,
                    "history_until": covered[1] if covered else None,
                },
            )
            return one(await cur.fetchone())

    # ------------------------------------------------------------------ housekeeping

    async def sweep_expired(self, limit: int) -> list[Swept]:
        return await self._all("sweep_expired", Swept, {"limit": limit})

    async def follow_apply(self, limit: int) -> int:
        """Follows up to `limit` product rows its bulk writes logged; returns how many."""
        row = await self._one("follow_apply", {"limit": limit})
        return row["followed"] if row else 0

    async def sweep_records(self) -> None:
        await self._run("sweep_records")

    async def reroute_orphans(self, limit: int) -> Moved:
        """Jobs of regions that are gone follow their monitor's routing (and wake)."""
        return await self._reroute("reroute_orphans", {"limit": limit}, wake_on="moved")

    async def _reroute(self, name: str, params: dict[str, Any], *, wake_on: str) -> Moved:
        """A query that moves jobs between regions; when its `wake_on` count is not zero,
        a NOTIFY in the same transaction wakes every relay."""
        async with pooled(self.pool) as conn, conn.cursor(row_factory=class_row(Moved)) as cur:
            await cur.execute(queries()[name], params)
            moved = one(await cur.fetchone())
            if getattr(moved, wake_on):
                await cur.execute(queries()["notify_outbox"])
        return moved

    async def now(self) -> datetime:
        return one(await self._one("now"))["now"]

    async def clock(self) -> float:
        """The database's clock_timestamp(), unix seconds."""
        return one(await self._one("clock"))["t"]

    async def undelivered(self, due_before: datetime, requeued: list[str]) -> list[Undelivered]:
        return await self._all(
            "undelivered", Undelivered, {"due_before": due_before, "requeued": requeued}
        )
