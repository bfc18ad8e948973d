"""Fixtures of the scheduling suites: one default region, and a hostile role in the cron
database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.dsn import as_user
from tests.support.hijacks import ATTACKER
from tests.support.seeding import add_region


@pytest.fixture
def region(conn) -> str:
    """us-east-1, the default region."""
    add_region(conn, "us-east-1", is_default=True)
    return "us-east-1"


@pytest.fixture
def attacker_in_cron_db(cron_db_url: str) -> Iterator[str]:
    """A role that may create objects in public (and nothing else) in the cron database;
    everything it planted goes afterwards."""
    with psycopg.connect(cron_db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {ATTACKER} LOGIN")
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {ATTACKER}")
    try:
        yield as_user(cron_db_url, ATTACKER)
    finally:
        with psycopg.connect(cron_db_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {ATTACKER}")
            admin.execute(f"DROP ROLE {ATTACKER}")
