"""One redis-server and one dev server for the whole devserver suite.

Three tokens map to three Redis databases (three "regions"); the third token ends in
base64 "=" padding, as real Upstash tokens do. Every test clears the fault rules after
itself, and uses its own key names, so tests do not see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest
import redis

from relay.devserver import DevServer
from relay.local.embedded import EmbeddedRedis

TOKEN_A, TOKEN_B, TOKEN_C = (
    "token-region-a",
    "token-region-b",
    "AYNgAS2553feg6a2d9842h2a0gcdb5f8efe9934DQ=",
)
DB_A, DB_B, DB_C = 1, 2, 3
ADMIN_TOKEN = "admin-secret-for-tests"


@pytest.fixture(scope="session")
def creds() -> SimpleNamespace:
    """The suite's tokens and the databases they map to."""
    return SimpleNamespace(
        token_a=TOKEN_A,
        token_b=TOKEN_B,
        token_c=TOKEN_C,
        db_a=DB_A,
        db_b=DB_B,
        db_c=DB_C,
        admin=ADMIN_TOKEN,
    )


@pytest.fixture(scope="session")
def devserver_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def devserver(devserver_redis: EmbeddedRedis) -> Iterator[DevServer]:
    tokens = {TOKEN_A: DB_A, TOKEN_B: DB_B, TOKEN_C: DB_C}
    with DevServer(devserver_redis.url, tokens, admin_token=ADMIN_TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_left(devserver: DevServer) -> Iterator[None]:
    yield
    devserver.clear_faults()


@pytest.fixture
def key() -> Callable[[str], str]:
    """Unique key names for this test: key("list") -> "t:<uuid>:list"."""
    prefix = f"t:{uuid.uuid4().hex}"
    return lambda name="k": f"{prefix}:{name}"


@pytest.fixture
def http_client(devserver: DevServer) -> Iterator[Callable[..., httpx.Client]]:
    """A factory of raw HTTP clients: http_client(token, timeout=...)."""
    made: list[httpx.Client] = []

    def make(token: str | None, **kwargs) -> httpx.Client:
        made.append(_client(devserver, token, **kwargs))
        return made[-1]

    yield make
    for http in made:
        http.close()


def _client(server: DevServer, token: str | None, **kwargs) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=server.url, headers=headers, timeout=kwargs.pop("timeout", 10.0), **kwargs
    )


@pytest.fixture
def client(devserver: DevServer) -> Iterator[httpx.Client]:
    """Raw HTTP with token A."""
    with _client(devserver, TOKEN_A) as http:
        yield http


@pytest.fixture
def client_b(devserver: DevServer) -> Iterator[httpx.Client]:
    with _client(devserver, TOKEN_B) as http:
        yield http


@pytest.fixture
def anonymous(devserver: DevServer) -> Iterator[httpx.Client]:
    with _client(devserver, None) as http:
        yield http


@pytest.fixture
def redis_db(devserver_redis: EmbeddedRedis) -> Iterator[Callable[[int], redis.Redis]]:
    """Direct redis-py connections to a database, bypassing the dev server."""
    opened: list[redis.Redis] = []

    def connect(db: int) -> redis.Redis:
        connection = redis.Redis.from_url(devserver_redis.url, db=db)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.close()
