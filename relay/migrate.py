"""`pgpulse migrate`: Alembic upgrades and downgrades from Python, with one-line errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from relay.db import DatabaseError, describe

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(dsn: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["dsn"] = dsn
    return config


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        orig = exc.orig
        message = describe(orig) if isinstance(orig, psycopg.Error) else str(orig)
        raise DatabaseError(f"migration failed: {message}") from exc


def upgrade(dsn: str, revision: str = "head") -> None:
    with _database_errors():
        command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    with _database_errors():
        command.downgrade(alembic_config(dsn), revision)
