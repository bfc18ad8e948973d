"""Fixtures for the relay's process tests: the dev server with empty region databases, the
three regions, relay subprocesses and the queues."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from relay.devserver import DevServer
from tests.support.processes import Relays
from tests.support.queues import SCHEMA, Queues
from tests.support.regions import BY_CODE, REGIONS, RegionSpec, take_down
from tests.support.seeding import add_regions


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
    add_regions(conn, "us-east-1", {"eu-west-1": "us-east-1", "ap-south-1": "us-east-1"})
    return BY_CODE


@pytest.fixture
def eu_down(upstash: DevServer, regions) -> RegionSpec:
    """eu-west-1, whose endpoint answers 503 to everything until the faults are cleared."""
    take_down(upstash, BY_CODE["eu-west-1"].token)
    return BY_CODE["eu-west-1"]


@pytest.fixture
def queues(redis_server) -> Iterator[Queues]:
    q = Queues(redis_server.url)
    yield q
    q.close()


@pytest.fixture
def relays(db_url, upstash, tmp_path) -> Iterator[Relays]:
    group = Relays(db_url, upstash.url, tmp_path)
    yield group
    group.cleanup()


@pytest.fixture
def schema_validator():
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(SCHEMA, format_checker=FormatChecker())
