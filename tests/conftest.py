"""Shared fixtures: one throwaway PostgreSQL (pg_cron preloaded), one redis-server and one
dev server (the regions of tests.support.regions) per session. Each test gets its own
database cloned from a migrated template (fast), through pytest-postgresql's
DatabaseJanitor. Helpers live in tests/support."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row
from pytest_postgresql.janitor import DatabaseJanitor

from relay import migrate
from relay.devserver import DevServer
from relay.local.embedded import CRON_DATABASE, EmbeddedPostgres, EmbeddedRedis
from tests.support import background_soak
from tests.support.bouncer import pgbouncer
from tests.support.cron_minute import Scenario, arrange_all
from tests.support.regions import ADMIN_TOKEN, REGIONS

TEMPLATE = "pgpulse_template"
_db_names = itertools.count()


# `make check`'s lane (under 2 minutes with lint and types): these folders' tests but the
# slow ones. `make test` runs the lane, then every other test (-m "not check").
CHECK_LANE = ("unit", "devserver", "integration")


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the lane's tests `check`; the tests that wait for pg_cron's next minute run
    together, last: they share it."""
    tests = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""
        if folder in CHECK_LANE and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.check)
    sharing = [item for item in items if item.get_closest_marker("cron_minute")]
    soak = [item for item in items if item.name == background_soak.TEST]
    items[:] = [item for item in items if item not in sharing and item not in soak]
    items += sharing + soak  # the soak, started at collection's end, is judged last


def pytest_collection_finish(session: pytest.Session) -> None:
    """The two-minute soak runs beside every other test (tests.support.background_soak)."""
    if any(item.name == background_soak.TEST for item in session.items):
        background_soak.start()


def pytest_sessionfinish() -> None:
    background_soak.stop_all()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(fast=True) as server:
        yield server


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate.upgrade(pg_server.dsn(TEMPLATE))
    return TEMPLATE


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """A fresh migrated database for this test (no pg_cron in it: see cron_db_url)."""
    name = f"t{os.getpid()}_{next(_db_names)}"
    janitor = DatabaseJanitor(
        user="postgres",
        host="127.0.0.1",
        port=pg_server.port,
        dbname=name,
        template_dbname=template_db,
    )
    with janitor:
        yield pg_server.dsn(name)


@pytest.fixture(scope="session")
def cron_db_url(pg_server: EmbeddedPostgres) -> str:
    """The cluster's cron.database_name, migrated: pg_cron jobs are installed here."""
    migrate.upgrade(pg_server.dsn(CRON_DATABASE))
    return pg_server.dsn(CRON_DATABASE)


@pytest.fixture
def bouncer(pg_server: EmbeddedPostgres) -> Iterator[int]:
    """A real pgbouncer in transaction mode in front of the cluster; its port
    (tests.support.bouncer.through makes a URL go through it)."""
    with pgbouncer(pg_server) as port:
        yield port


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def devserver(redis_server: EmbeddedRedis) -> Iterator[DevServer]:
    """Each region's two tokens reach its Redis database; the admin API is on."""
    tokens = {r.token: r.db for r in REGIONS} | {r.alt_token: r.db for r in REGIONS}
    with DevServer(redis_server.url, tokens, admin_token=ADMIN_TOKEN) as server:
        yield server


@pytest.fixture(scope="session")
def cron_scenarios(request: pytest.FixtureRequest) -> Iterator[dict[type[Scenario], Scenario]]:
    """The scenarios of every selected `cron_minute` test, arranged before one minute."""
    scenarios = arrange_all(request)
    try:
        yield scenarios
    finally:
        for scenario in scenarios.values():
            scenario.close()


@pytest.fixture
def cron_minute(request: pytest.FixtureRequest, cron_scenarios) -> Iterator[Scenario]:
    """This test's scenario (its marker's), arranged with the others; closed after it."""
    scenario = cron_scenarios[request.node.get_closest_marker("cron_minute").kwargs["scenario"]]
    try:
        if scenario.error is not None:
            raise scenario.error
        yield scenario
    finally:
        scenario.close()
