"""Runs one scheduler tick (the SQL procedure pgpulse.tick) and returns its record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from relay.db import connect, fetch_json, one, pinned
from relay.queries import queries


def _param(default: float, argument: str, option: str, metavar: str, help: str) -> Any:
    return field(
        default=default,
        metadata={"argument": argument, "option": option, "metavar": metavar, "help": help},
    )


@dataclass(frozen=True)
class TickParams:
    """The arguments of one tick, shared by `pgpulse tick`, POST /api/cron/scheduler and the
    tests. The defaults are the procedure's own (a test reads them from pg_proc); the
    procedure refuses values outside its ranges with a one-line error."""

    budget_s: float = _param(
        45.0, "p_budget", "--budget", "SECONDS", "time budget in seconds (more than 0, at most 55)"
    )
    lookahead_s: float = _param(
        70.0,
        "p_lookahead",
        "--lookahead",
        "SECONDS",
        "emit jobs due within this many seconds (0 to 600)",
    )
    chunk: int = _param(
        5000, "p_chunk", "--chunk", "MONITORS", "monitors claimed per transaction (1 to 100000)"
    )

    @staticmethod
    def add_options(parser) -> None:
        """`pgpulse tick`'s options, one per field."""
        for f in fields(TickParams):
            parser.add_argument(
                f.metadata["option"],
                dest=f.name,
                type=type(f.default),
                default=f.default,
                metavar=f.metadata["metavar"],
                help=f.metadata["help"],
            )

    @classmethod
    def from_options(cls, args) -> TickParams:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def run_tick(
    dsn: str, params: TickParams = TickParams(), *, trigger: str = "cli"
) -> dict[str, Any]:
    # autocommit (the procedure commits per chunk): the statements outside `pinned` qualify
    # every name themselves
    with connect(dsn, autocommit=True) as conn:
        # the tick bounds its own lock waits and chunks; this ends it should anything else
        # stall it (a CALL is one statement however many chunks it commits)
        conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', %s, false)",
            (f"{round((min(max(params.budget_s, 0), 55) + 15) * 1000)}ms",),
        )
        run_id = one(
            conn.execute(queries()["tick"], {"trigger": trigger, **asdict(params)}).fetchone()
        )["run_id"]
        with pinned(conn):
            return tick_record(conn, run_id)


def tick_record(conn, run_id: int) -> dict[str, Any]:
    return fetch_json(conn, queries()["tick_run"], {"id": run_id})[0]
