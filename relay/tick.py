"""Runs one scheduler tick (the SQL procedure pgpulse.tick) and returns its record."""

from __future__ import annotations

from typing import Any

from relay.db import connect, fetch_rows
from relay.queries import queries


def run_tick(dsn: str, *, trigger: str = "cli", budget_s: float = 45.0,
             lookahead_s: float = 60.0, chunk: int = 5000) -> dict[str, Any]:
    with connect(dsn, autocommit=True) as conn:
        # the tick bounds its own lock waits and chunks; this ends it should anything else
        # stall it (a CALL is one statement however many chunks it commits)
        conn.execute("SELECT set_config('statement_timeout', %s, false)",
                     (f"{round((min(max(budget_s, 0), 55) + 15) * 1000)}ms",))
        run_id = conn.execute(queries()["tick"], {
            "trigger": trigger, "budget_s": budget_s, "lookahead_s": lookahead_s, "chunk": chunk,
        }).fetchone()["run_id"]
        return tick_record(conn, run_id)


def tick_record(conn, run_id: int) -> dict[str, Any]:
    return fetch_rows(conn, "tick_run", {"id": run_id})[0]
