"""Fixtures for the regional worker's suite: a dev server that refuses what Redis added after
6.2 (`--redis-compat 6.2`, as Upstash documents) and scripts touching keys they did not pass
in KEYS (`--strict-script-keys`, as Upstash asks), its own Redis databases, and local HTTP
targets. No PostgreSQL: a worker only talks to its region's Upstash endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from relay.devserver import DevServer
from tests.support.worker import WORKER_REGIONS, Targets


@pytest.fixture(scope="session")
def compat_upstash(redis_server) -> Iterator[DevServer]:
    tokens = {r.token: r.db for r in WORKER_REGIONS}
    with DevServer(redis_server.url, tokens, redis_compat="6.2", strict_script_keys=True) as server:
        yield server


@pytest.fixture
def upstash62(compat_upstash: DevServer, redis_server) -> DevServer:
    """The 6.2-compatible dev server with the worker regions' databases emptied."""
    for region in WORKER_REGIONS:
        redis.Redis.from_url(redis_server.url, db=region.db).flushdb()
    return compat_upstash


@pytest.fixture
def rdb(redis_server) -> Iterator[redis.Redis]:
    """The first worker region's database, read straight from redis-server."""
    client = redis.Redis.from_url(redis_server.url, db=WORKER_REGIONS[0].db, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def targets() -> Iterator[Targets]:
    with Targets() as t:
        yield t
