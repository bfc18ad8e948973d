"""Fixtures of the migration tests."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import psycopg
import pytest

from relay.local.embedded import EmbeddedPostgres

_names = itertools.count()


@pytest.fixture
def empty_db(pg_server: EmbeddedPostgres) -> Iterator[Callable[[], str]]:
    """Makes empty databases (no schema, no pg_cron); drops them afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"m{os.getpid()}_{next(_names)}"
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return pg_server.dsn(name)

    yield make
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
