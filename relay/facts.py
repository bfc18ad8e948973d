"""Database-wide facts that metrics, alert rules and the status page look at, read in one go
on one connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from relay.queries import queries


async def read_facts(conn) -> dict[str, Any]:
    """`conn`: an async psycopg connection with dict rows, in autocommit."""

    async def rows(name: str) -> list[dict[str, Any]]:
        return await (await conn.execute(queries()[name])).fetchall()

    last = (await rows("last_good_tick"))[0]
    latest = await rows("latest_tick")
    finished = await rows("latest_finished_tick")
    return {
        "backlog": await rows("backlog"),
        "last_tick_age_s": last["age_s"],
        "latest_tick": latest[0] if latest else None,
        "latest_finished_tick": finished[0] if finished else None,
        "dead_letters": {
            r["region"]: r["dead_letters"] for r in await rows("dead_letters_by_region")
        },
        "schedule": (await rows("schedule_health"))[0]
        | {"following": (await rows("following"))[0]},
        "unhealthy_regions": {
            r["region"]: r["unhealthy_s"] for r in await rows("unhealthy_regions")
        },
        # for the status page
        "regions": await rows("regions"),
        "recent_ticks": await (
            await conn.execute(queries()["recent_ticks"], {"limit": 8})
        ).fetchall(),
        "recent_dead_letters": await (
            await conn.execute(queries()["dlq_list"], {"limit": 5})
        ).fetchall(),
        "pg_cron": await _cron_job(conn, queries()["cron_job"]),
        "vacuum": held_back((await rows("vacuum_horizon")) or None),
        "dead_tuples": {r["table"]: r["dead"] for r in await rows("dead_tuples")},
    }


# The holder of the vacuum horizon this process saw first, and when (monotonic seconds)
_first_seen: dict[tuple[str, str, str], float] = {}


def held_back(
    horizon: list[dict[str, Any]] | None, clock: Callable[[], float] = time.monotonic
) -> dict[str, Any] | None:
    """The oldest holder of the vacuum horizon (query vacuum_horizon) and how long it has
    held it: PostgreSQL's figure where it shows one; else (another role's session, a
    replication slot) the time since this process first saw that holder with that xid, a
    lower bound that reads 0 at first sight."""
    if not horizon:
        _first_seen.clear()
        return None
    row = horizon[0]
    key = (row["kind"], row["holder"], row["xid"])
    first = _first_seen.get(key)
    if first is None:
        _first_seen.clear()
        first = _first_seen[key] = clock()
    held_s = row["held_s"] if row["held_s"] is not None else clock() - first
    return {
        "kind": row["kind"],
        "holder": row["holder"],
        "detail": row["detail"],
        "xid_age": row["xid_age"],
        "held_s": max(0.0, held_s),
    }


async def _cron_job(conn, sql: str) -> dict[str, Any] | None:
    """pg_cron's tick job, or None where pg_cron is not installed or not readable."""
    installed = await (
        await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS yes"
        )
    ).fetchone()
    if not installed["yes"]:
        return None
    try:
        async with conn.transaction():
            return await (await conn.execute(sql, {"database": None})).fetchone()
    except psycopg.Error:  # e.g. a role pg_cron does not let read cron.job
        return None
