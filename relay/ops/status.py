"""`pgpulse status`: is every monitor being checked on time? One snapshot from the database."""

from __future__ import annotations

from typing import Any

import psycopg

from relay.db import fetch_json
from relay.ops.facts import cron_note
from relay.queries import queries
from relay.worker.protocol import alive_by_region


def snapshot(conn) -> dict[str, Any]:
    """Backlog per region, oldest due job, dead letters, recent ticks, pg_cron, health."""
    backlog = fetch_json(conn, queries()["backlog"])
    access = conn.execute(queries()["cron_access"]).fetchone()
    cron = []
    if access["here"] and access["readable"]:
        try:
            with conn.transaction():
                cron = fetch_json(conn, queries()["cron_job"], {"database": None})
        except psycopg.Error:  # e.g. a pg_cron too old for the query: said, not fatal
            access = access | {"readable": False}
    regions = fetch_json(conn, queries()["region_list"])
    return {
        "regions": regions,
        # heartbeats in each region's Upstash database (docs/queue-contract.md, version 2)
        "workers": alive_by_region([r["code"] for r in regions]),
        "backlog": backlog,
        "oldest_due_age_s": max((float(r["oldest_due_age_s"]) for r in backlog), default=0.0),
        "dead_letters": conn.execute(queries()["dead_letter_count"]).fetchone()["dead_letters"],
        "recent_ticks": fetch_json(conn, queries()["recent_ticks"], {"limit": 5}),
        "last_tick_age_s": conn.execute(queries()["last_good_tick"]).fetchone()["age_s"],
        "pg_cron": cron[0] if cron else None,
        # why no job is shown, true whatever this role may see of pg_cron
        "pg_cron_note": cron_note(access, cron[0] if cron else None),
        "maintenance": fetch_json(conn, queries()["maintenance_list"]),
        "maintenance_skipped": conn.execute(queries()["maintenance_skipped"]).fetchone(),
    }


def render(s: dict[str, Any]) -> str:
    lines = ["regions:"]
    backlog = {b["region"]: b for b in s["backlog"]}
    for r in s["regions"]:
        b = backlog.get(r["code"], {})
        flags = [
            f
            for f, on in (
                ("default", r["is_default"]),
                ("disabled", not r["enabled"]),
                ("UNHEALTHY", not r["healthy"]),
                ("WORKERS-ABSENT", r.get("workers_absent")),
                ("degraded", r["degraded"]),
            )
            if on
        ]
        lines.append(
            f"  {r['code']:<16} waiting {b.get('waiting', 0):>7}  due {b.get('due', 0):>7}  "
            f"oldest due {float(b.get('oldest_due_age_s', 0)):6.1f}s  "
            f"fallback {r['fallback_region'] or '-':<12} {' '.join(flags)}"
        )
    lines.append(
        "workers alive (heartbeat within 30 s): "
        + ", ".join(
            f"{code} " + ("?" if ids is None else str(len(ids)) if isinstance(ids, list) else ids)
            for code, ids in s.get("workers", {}).items()
        )
    )
    lines.append(
        f"oldest due job: {s['oldest_due_age_s']:.1f}s   dead letters: {s['dead_letters']}"
    )
    age = s["last_tick_age_s"]
    lines.append("last finished tick: " + ("never" if age is None else f"{age:.0f}s ago"))
    for t in s["recent_ticks"]:
        lines.append(
            f"  tick {t['id']:>6} {t['trigger']:<8} {t['started_at']}  "
            f"{t['monitors_claimed']:>7} monitors  {t['jobs_written']:>7} jobs  "
            f"{t['duration_ms'] if t['duration_ms'] is not None else '?':>6} ms"
            + ("  CUT SHORT" if t["cut_short"] else "")
            + ("  (unfinished)" if t["finished_at"] is None else "")
        )
    if s.get("maintenance"):
        from relay.schedule.maintenance import describe

        skipped = s["maintenance_skipped"]
        lines.append(
            f"maintenance windows: {skipped['total']} slot(s) skipped, "
            f"{skipped['last_hour']} in the last hour"
        )
        lines.extend("  " + describe(w) for w in s["maintenance"])
    cron = s["pg_cron"]
    if cron:
        lines.append(
            f"pg_cron job {cron['jobname']}: '{cron['schedule']}' "
            f"{'active' if cron['active'] else 'INACTIVE'}, last run "
            f"{cron['last_status'] or 'never'} at {cron['last_start'] or '-'}"
        )
    else:
        lines.append(f"pg_cron job: {s['pg_cron_note']}")
    return "\n".join(lines)
