"""Helpers the scheduling suites share: one tick, one region row."""

from __future__ import annotations


def tick(conn, *, budget_s: float = 45.0, lookahead_s: float = 60.0, chunk: int = 5000,
         trigger: str = "test") -> dict:
    """Runs one tick on an autocommit connection and returns its tick_runs row."""
    run_id = conn.execute(
        "CALL pgpulse.tick(NULL, %s, make_interval(secs => %s), make_interval(secs => %s), %s)",
        (trigger, budget_s, lookahead_s, chunk)).fetchone()["run_id"]
    return conn.execute("SELECT * FROM pgpulse.tick_runs WHERE id = %s", (run_id,)).fetchone()


def add_region(conn, code: str, **cols) -> None:
    names = ["code", *cols]
    conn.execute(
        f"INSERT INTO pgpulse.regions ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
        [code, *cols.values()])
