"""Fixtures of the scheduling suites that need more than a database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.scheduling import ATTACKER, as_user


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
