"""Where pgpulse's SQL and Alembic migrations are.

The repository keeps them at its top (sql/, migrations/); the wheel carries the same files
inside the package as relay/sql and relay/migrations (pyproject.toml maps them at build
time). Installed, they are read through importlib.resources; in a checkout, from the top."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Traversable:
    """relay/<name> of the installed package, else <checkout>/<name>."""
    inside = files("relay") / name
    return inside if inside.is_dir() else _CHECKOUT / name


def sql_text(name: str) -> str:
    return (resource_dir("sql") / name).read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """Alembic reads revisions from a directory on disk (a wheel installs unzipped)."""
    return Path(str(resource_dir("migrations")))


def schema_files() -> list[str]:
    """The canonical schema's files, sql/NN_<concern>.sql, in the order they are applied."""
    names = (entry.name for entry in resource_dir("sql").iterdir())
    return sorted(n for n in names if n[:2].isdigit() and n[2] == "_" and n.endswith(".sql"))


def schema_sql() -> str:
    """The canonical schema as one script: what a fresh install holds (roles and pg_cron jobs
    aside: sql/roles.sql, sql/cron.sql)."""
    return "\n".join(sql_text(name) for name in schema_files())
