"""Database access: connections that turn driver errors into one-line pgpulse errors, and
the one way every pgpulse transaction starts (`pinned`, `apinned`, `pooled`).

No name in pgpulse's SQL resolves through the connecting role's search_path. On it, any role
with CREATE on a schema (public: every role on PostgreSQL 14 and older) could plant an
operator or function that matches some argument types more exactly than pg_catalog's
(`||` on text and uuid builds every job's JSON) and so runs instead, as the relay's role.
Every transaction therefore begins by setting search_path to pg_catalog, pg_temp for that
transaction only (pgpulse's own objects are always schema-qualified). Never for the session:
behind a transaction-mode pooler (PgBouncer, Supavisor) a session setting lands on whichever
server connection ran it and stays there for other clients, and startup `options` are
refused. A statement that cannot run in a transaction (`CALL pgpulse.tick`, which commits)
is written to be safe whatever the path: every function in it schema-qualified.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from relay.config import redact_url
from relay.errors import DatabaseError

SEARCH_PATH = "pg_catalog, pg_temp"  # pg_temp last: never searched for functions or operators

Row = TypeVar("Row")
# pgpulse's connections make dict rows (row_factory=dict_row)
DictConnection = psycopg.Connection[dict[str, Any]]
AsyncDictConnection = psycopg.AsyncConnection[dict[str, Any]]


def one(row: Row | None) -> Row:
    """The row of a query that always returns one (an aggregate, a function's result)."""
    if row is None:
        raise DatabaseError("the query returned no row")
    return row


def pin_statement(statement_timeout_ms: int | None = None) -> str:
    """The first statement of every transaction (qualified itself: it runs before the pin),
    with a statement timeout for the transaction when given."""
    timeout = (
        f", pg_catalog.set_config('statement_timeout', '{int(statement_timeout_ms)}', true)"
        if statement_timeout_ms is not None
        else ""
    )
    return f"SELECT pg_catalog.set_config('search_path', '{SEARCH_PATH}', true){timeout}"


def describe(exc: psycopg.Error) -> str:
    """The server's primary message (and detail), without a traceback or a password."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag and diag.message_primary else str(exc).strip()
    detail = f" ({diag.message_detail})" if diag and diag.message_detail else ""
    return (primary.splitlines()[0] if primary else type(exc).__name__) + detail


@contextlib.contextmanager
def pinned(
    conn: psycopg.Connection[Row], *, statement_timeout_ms: int | None = None
) -> Iterator[psycopg.Connection[Row]]:
    """A transaction (a savepoint inside one) whose names resolve in pg_catalog: commits
    when the block ends, rolls back if it raises."""
    with conn.transaction():
        conn.execute(pin_statement(statement_timeout_ms))
        yield conn


@contextlib.asynccontextmanager
async def apinned(
    conn: psycopg.AsyncConnection[Row], *, statement_timeout_ms: int | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Row]]:
    """`pinned` for an async connection."""
    async with conn.transaction():
        await conn.execute(pin_statement(statement_timeout_ms))
        yield conn


@contextlib.asynccontextmanager
async def pooled(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection of the pool in a pinned transaction (the relay's every query)."""
    async with pool.connection() as conn, apinned(conn):
        yield conn


async def unreachable(dsn: str, timeout_s: int = 10) -> str | None:
    """None when the database accepts a connection now; else why not, in one line."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, connect_timeout=timeout_s, application_name="pgpulse"
        )
    except (psycopg.Error, OSError) as exc:
        return describe(exc) if isinstance(exc, psycopg.Error) else str(exc)
    await conn.close()
    return None


@contextlib.contextmanager
def connect(dsn: str, *, autocommit: bool = False) -> Iterator[DictConnection]:
    """A connection in one pinned transaction, committed when the block ends (a command's
    statements). autocommit=True: no transaction, for a statement that commits itself; its
    other statements go in `pinned(conn)` blocks."""
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="pgpulse",
            prepare_threshold=None,  # nothing left on a pooler's shared server session
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to {redact_url(dsn)}: {describe(exc)}") from exc
    try:
        with conn:
            if autocommit:
                yield conn
            else:
                with pinned(conn):
                    yield conn
    except psycopg.Error as exc:
        raise DatabaseError(describe(exc)) from exc


def fetch_json(conn: DictConnection, sql: str, params: dict | None = None) -> list[dict[str, Any]]:
    """Runs a query (`queries()["name"]`); timestamps come back as ISO 8601 strings, ready
    for JSON."""
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
        for row in conn.execute(sql, params or {}).fetchall()
    ]
