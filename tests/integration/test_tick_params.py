"""One set of tick parameters: TickParams' defaults are the procedure's own, read from
pg_proc of a migrated database (so `pgpulse tick`, the HTTP trigger and pg_cron's call
without arguments all tick alike)."""

from __future__ import annotations

import re
from dataclasses import fields

from psycopg import sql

from relay.schedule.tick import TickParams


def procedure_defaults(conn) -> dict[str, float]:
    """pgpulse.tick's defaulted arguments, evaluated: intervals in seconds."""
    signature = conn.execute(
        "SELECT pg_get_function_arguments(p.oid) AS args FROM pg_proc p "
        " WHERE p.pronamespace = 'pgpulse'::regnamespace AND p.proname = 'tick'"
    ).fetchone()["args"]
    defaults = {}
    for name, type_, expr in re.findall(r"(\w+) (\w+) DEFAULT ([^,]+)", signature):
        value = sql.SQL("extract(epoch FROM {})" if type_ == "interval" else "{}").format(
            sql.SQL(expr)
        )
        defaults[name] = conn.execute(sql.SQL("SELECT {} AS v").format(value)).fetchone()["v"]
    return defaults


def test_tick_params_defaults_are_the_procedures(conn):
    defaults = procedure_defaults(conn)
    params = TickParams()
    assert {f.metadata["argument"]: getattr(params, f.name) for f in fields(TickParams)} == {
        name: value for name, value in defaults.items() if name not in ("run_id", "p_trigger")
    }
