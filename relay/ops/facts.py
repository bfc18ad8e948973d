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

    def rows(name: str):
        return rows_of(conn, name)

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
        "absent_workers": {
            r["region"]: {"absent_s": r["absent_s"], "routed_to": r["routed_to"]}
            for r in await rows("absent_workers")
        },
        # for the status page
        "regions": await rows("regions"),
        "recent_ticks": await (
            await conn.execute(queries()["recent_ticks"], {"limit": 8})
        ).fetchall(),
        "recent_dead_letters": await (
            await conn.execute(queries()["dlq_list"], {"limit": 5})
        ).fetchall(),
        **await _cron(conn),
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


async def _cron(conn) -> dict[str, Any]:
    """pg_cron's tick job (None where it is not shown) and, then, why not (cron_note)."""
    access = (await rows_of(conn, "cron_access"))[0]
    job = None
    if access["here"] and access["readable"]:
        try:
            async with conn.transaction():
                job = await (
                    await conn.execute(queries()["cron_job"], {"database": None})
                ).fetchone()
        except psycopg.Error:  # e.g. a pg_cron too old for the query: said, not fatal
            access = access | {"readable": False}
    return {"pg_cron": job, "pg_cron_note": cron_note(access, job)}


async def rows_of(conn, name: str) -> list[dict[str, Any]]:
    return await (await conn.execute(queries()[name])).fetchall()


def cron_note(access: dict[str, Any], job: dict[str, Any] | None) -> str | None:
    """Why pg_cron's tick job is not shown (None when it is), in words that stay true
    whatever this role may see: `access` is the cron_access query's row."""
    if job is not None:
        return None
    seen = ticks_seen(access["last_cron_tick_age_s"])
    if not access["here"]:
        return (
            "pg_cron is not in this database (pg_cron in another one may tick it: "
            f"`pgpulse doctor` looks there); {seen}"
        )
    look = admin_look(None)
    if not access["readable"]:
        return (
            "pg_cron is in this database, and this role may not read its jobs (schema cron): "
            f"an admin checks with `{look}`; {seen}"
        )
    if not access["sees_all"]:
        return (
            "no pgpulse-tick job visible to this role (pg_cron shows a role only its own "
            f"jobs): an admin checks with `{look}`; {seen}"
        )
    return (
        "no pgpulse-tick job for this database in pg_cron here (ticks come from `pgpulse "
        f"tick`, the HTTP trigger or pg_cron in another database); {seen}"
    )


def admin_look(database: str | None) -> str:
    """What an admin runs in pg_cron's database to see the job that ticks `database`
    (None: the database it runs in)."""
    where = f"'{database}'" if database else "current_database()"
    return (
        f"SELECT schedule, active FROM cron.job WHERE jobname = 'pgpulse-tick' "
        f"AND database = {where}"
    )


def ticks_seen(age_s: float | None) -> str:
    """What this database shows of pg_cron without seeing its jobs: its latest tick."""
    if age_s is None:
        return "no tick here has come from pg_cron yet"
    return f"the latest tick here that pg_cron started began {age_s:.0f} s ago"
