"""`pgpulse migrate`: Alembic upgrades and downgrades from Python, with one-line errors.

Alembic is configured here, in code, so the installed wheel needs no alembic.ini (the
repository keeps one for people who run `alembic` themselves)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from relay.db import DatabaseError, describe
from relay.resources import migrations_dir


def version_location() -> Path:
    """pgpulse's revisions, for a host's own Alembic `version_locations`; makes the module
    name its revisions import (`migrations.sqlfile`) resolve to pgpulse's copy."""
    location = migrations_dir()
    _register_migrations_package(location)
    return location / "versions"


def _register_migrations_package(location: Path) -> None:
    known = sys.modules.get("migrations")
    if known is not None:
        if Path(getattr(known, "__file__", "") or "").resolve().parent != location.resolve():
            raise DatabaseError("another package named `migrations` is loaded in this process; "
                                "pgpulse's revisions import migrations.sqlfile from their own")
        return
    spec = importlib.util.spec_from_file_location(
        "migrations", location / "__init__.py", submodule_search_locations=[str(location)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["migrations"] = module
    spec.loader.exec_module(module)


def alembic_config(dsn: str | None, *, output: io.TextIOBase | None = None) -> Config:
    location = migrations_dir()
    _register_migrations_package(location)
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("path_separator", "os")
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


def upgrade_sql(revision: str = "head", start: str | None = None) -> str:
    """The upgrade's DDL, as a DBA would run it (Alembic's offline mode): no connection.
    From an empty database unless start names the revision the database is at."""
    out = io.StringIO()
    target = f"{start}:{revision}" if start else revision
    command.upgrade(alembic_config(None, output=out), target, sql=True)
    return out.getvalue()
