"""Database access: connections that turn driver errors into one-line pgpulse errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay.config import redact_url
from relay.errors import DatabaseError


def describe(exc: psycopg.Error) -> str:
    """The server's primary message (and detail), without a traceback or a password."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag and diag.message_primary else str(exc).strip()
    detail = f" ({diag.message_detail})" if diag and diag.message_detail else ""
    return (primary.splitlines()[0] if primary else type(exc).__name__) + detail


@contextlib.contextmanager
def connect(dsn: str, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(
            dsn,
            autocommit=autocommit,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="pgpulse",
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to {redact_url(dsn)}: {describe(exc)}") from exc
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise DatabaseError(describe(exc)) from exc


def fetch_json(
    conn: psycopg.Connection, sql: str, params: dict | None = None
) -> list[dict[str, Any]]:
    """Runs a query (`queries()["name"]`); timestamps come back as ISO 8601 strings, ready
    for JSON."""
    return [
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
        for row in conn.execute(sql, params or {}).fetchall()
    ]
