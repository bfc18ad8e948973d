"""Operator actions on regions and dead letters, each one named query."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from relay.config import REGION_CODE
from relay.db import fetch_json
from relay.errors import UnknownRegion, UserInputError
from relay.queries import queries


def check_region_code(code: str) -> str:
    if not REGION_CODE.match(code):
        raise UserInputError(f"bad region code {code!r}: use lowercase letters, digits and '-'")
    return code


def region_list(conn) -> list[dict[str, Any]]:
    return fetch_json(conn, queries()["region_list"])


def region_add(
    conn, code: str, *, enabled: bool = True, fallback: str | None = None, weight: int = 1
) -> None:
    check_region_code(code)
    try:
        conn.execute(
            queries()["region_add"],
            {"code": code, "enabled": enabled, "fallback": fallback, "weight": weight},
        )
    except psycopg.errors.UniqueViolation:
        raise UserInputError(f"region {code} already exists") from None
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownRegion(f"unknown fallback region {fallback!r}") from None


def _update_region(conn, name: str, params: dict[str, Any]) -> None:
    if conn.execute(queries()[name], params).fetchone() is None:
        raise UnknownRegion(f"unknown region {params['code']!r}")


def region_enable(conn, code: str, enabled: bool) -> None:
    _update_region(conn, "region_set_enabled", {"code": code, "enabled": enabled})


def region_set_default(conn, code: str) -> None:
    with conn.transaction():  # an unknown code rolls the clearing back
        conn.execute(queries()["region_clear_default"])
        _update_region(conn, "region_set_default", {"code": code})


def _job_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UserInputError(f"bad job id {value!r}: expected a UUID") from None


def dlq_list(conn, limit: int = 50) -> list[dict[str, Any]]:
    return fetch_json(conn, queries()["dlq_list"], {"limit": limit})


def dlq_retry(conn, job_id: str | None = None) -> dict[str, int]:
    """Dead letters back to the outbox: {"retried": moved, "kept": left in place because
    their slot is in the outbox already}."""
    row = conn.execute(queries()["dlq_retry"], {"job_id": _job_id(job_id)}).fetchone()
    return {"retried": row["retried"], "kept": row["kept"]}


def dlq_purge(conn, job_id: str | None = None) -> int:
    return conn.execute(queries()["dlq_purge"], {"job_id": _job_id(job_id)}).fetchone()["purged"]
