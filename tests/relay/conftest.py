"""Fixtures for the relay's process tests: the dev server (one token per region, each
token a Redis database), the three regions, relay subprocesses and the queues."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from harness import ADMIN_TOKEN, BY_CODE, REGIONS, SCHEMA, Queues, RegionSpec, Relays
from relay.devserver import DevServer


@pytest.fixture(scope="session")
def devserver(redis_server) -> Iterator[DevServer]:
    tokens = {r.token: r.db for r in REGIONS} | {r.alt_token: r.db for r in REGIONS}
    with DevServer(redis_server.url, tokens,
                   admin_token=ADMIN_TOKEN) as server:
        yield server


@pytest.fixture
def upstash(devserver: DevServer, redis_server) -> Iterator[DevServer]:
    """The dev server with empty region databases, no faults and zeroed stats."""
    if devserver.proc is None or devserver.proc.poll() is not None:
        devserver.start()
    for region in REGIONS:
        redis.Redis.from_url(redis_server.url, db=region.db).flushdb()
    devserver.clear_faults()
    devserver.reset_stats()
    yield devserver
    if devserver.proc is not None:
        devserver.clear_faults()


@pytest.fixture
def regions(conn) -> dict[str, RegionSpec]:
    """Three regions: us-east-1 is the default, the other two fall back to it."""
    conn.execute("""
        INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true);
        INSERT INTO pgpulse.regions (code, fallback_region) VALUES
            ('eu-west-1', 'us-east-1'), ('ap-south-1', 'us-east-1');
    """)
    return BY_CODE


@pytest.fixture
def queues(redis_server) -> Iterator[Queues]:
    q = Queues(redis_server.url)
    yield q
    q.close()


@pytest.fixture
def relays(db_url, upstash, tmp_path) -> Iterator[Relays]:
    group = Relays(db_url, upstash, tmp_path)
    yield group
    group.cleanup()


@pytest.fixture
def schema_validator():
    from jsonschema import Draft202012Validator, FormatChecker
    return Draft202012Validator(SCHEMA, format_checker=FormatChecker())


