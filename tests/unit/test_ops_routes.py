"""The ops HTTP app in-process (relay.ops.http.OpsApp, an ASGI app) through httpx.ASGITransport:
its routes and methods, /readyz's reasons, /metrics, who may trigger a tick or see the
status page, the concurrency cap, and no secret in any answer. The facts the pages show are
set as a snapshot (the loop that reads them is relay.ops.snapshot's); a database that cannot be
reached is a port that refuses connections. A tick through the trigger, and the facts of a
real database: tests/integration/test_ops_app.py. The served process (uvicorn, slow clients,
descriptors): tests/ops/test_http.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from relay.config import OpsSettings
from relay.ops import metrics
from relay.ops.http import SECURITY_HEADERS, OpsApp
from relay.ops.snapshot import Snapshot
from tests.support.fakes import Clock, make_region

CRON_SECRET = "cron-s3cret-4b1d9e70"
STATUS_SECRET = "st4tus-pw-8c2e"
SETTINGS = OpsSettings(cron_secret=CRON_SECRET)  # readiness: backlog 120 s, facts 30 s, tick 180 s
REMOTE = ("203.0.113.9", 40000)


@pytest.fixture
def nowhere() -> Iterator[str]:
    """A database URL with a user and password whose port refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"postgresql://dbuser-7c1e:pw-9a8b7c6d@127.0.0.1:{port}/nowhere?connect_timeout=2"


def snapshot(facts: dict[str, Any] | None = None, *, age_s: float = 1.0, **kwargs: Any) -> Snapshot:
    """Facts read `age_s` ago by a read that succeeded (unless kwargs say otherwise)."""
    now = time.time()
    fields = {"read_at": now - age_s, "attempted_at": now, "database_ok": True, "error": None}
    return Snapshot(facts, **(fields | kwargs))


def facts(**changes: Any) -> dict[str, Any]:
    return {"last_tick_age_s": 20.0, "backlog": [], "unhealthy_regions": {}} | changes


def app_for(dsn: str, settings: OpsSettings = SETTINGS, relay=None, **shown: Any) -> OpsApp:
    """The app, its facts as `snapshot(**shown)` (never read from `dsn` here)."""
    app = OpsApp(dsn, settings, relay=relay)
    app.facts.snapshot = snapshot(**shown) if shown else snapshot(facts())
    return app


@pytest.fixture
async def client(nowhere) -> AsyncIterator[Any]:
    """await client(app=None, peer=("127.0.0.1", 123)): an httpx client on the app."""
    opened: list[httpx.AsyncClient] = []

    async def make(app: OpsApp | None = None, peer: tuple[str, int] = ("127.0.0.1", 123)):
        transport = httpx.ASGITransport(app=app or app_for(nowhere), client=peer)
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://ops.test"))
        return opened[-1]

    yield make
    for http in opened:
        await http.aclose()


# ------------------------------------------------------------------ routes and methods

# (method, path, status, Allow header)
ROUTES = [
    ("GET", "/healthz", 200, None),
    ("HEAD", "/healthz", 200, None),
    ("GET", "/readyz", 200, None),
    ("HEAD", "/metrics", 200, None),
    ("GET", "/nope", 404, None),
    ("GET", "/healthz/", 404, None),
    ("GET", "/HEALTHZ", 404, None),
    ("POST", "/api/cron", 404, None),
    ("POST", "/healthz", 405, "GET"),
    ("POST", "/", 405, "GET"),
    ("PUT", "/", 405, "GET"),
    ("DELETE", "/", 405, "GET"),
    ("DELETE", "/metrics", 405, "GET"),
    ("POST", "/readyz", 405, "GET"),
    ("GET", "/api/cron/scheduler", 405, "POST"),
    ("HEAD", "/api/cron/scheduler", 405, "POST"),
    ("PUT", "/api/cron/scheduler", 405, "POST"),
]


@pytest.mark.parametrize(("method", "path", "status", "allow"), ROUTES)
async def test_routes_and_methods(client, method, path, status, allow):
    response = await (await client()).request(method, path)
    assert response.status_code == status
    assert response.headers.get("allow") == allow
    for name, value in SECURITY_HEADERS:
        assert response.headers[name.decode()] == value.decode()
    if method == "HEAD":
        return
    if status == 404:
        assert response.json() == {"error": "not found"}
    if status == 405:
        assert response.json() == {"error": f"method {method} not allowed"}


async def test_healthz_says_ok_and_skips_the_queue_that_the_others_wait_in(client, nowhere):
    app = app_for(nowhere, dataclasses.replace(SETTINGS, http_max_requests=1))
    http = await client(app)
    async with app.busy:  # one request in flight: the cap
        busy = await http.get("/readyz")
        assert (busy.status_code, busy.json()) == (503, {"error": "busy"})
        assert busy.headers["retry-after"] == "1"
        assert (await http.get("/metrics")).status_code == 503
        health = await http.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert (await http.get("/nope")).status_code == 404
    assert (await http.get("/readyz")).status_code == 200


# ------------------------------------------------------------------ /readyz


def relay_with(*regions, stopping: bool = False) -> SimpleNamespace:
    """The relay of this process as the app sees it: its regions and whether it stops."""
    stop = asyncio.Event()
    if stopping:
        stop.set()
    return SimpleNamespace(
        regions={r.code: r for r in regions}, stop=stop, breakers_open_s=lambda: {}
    )


def region(code: str, *, breaker_open: bool = False, enabled: bool = True):
    made = make_region(code, Clock())
    made.enabled = enabled
    if breaker_open:
        made.breaker.trip()
    return made


OLD_US = {"region": "us-east-1", "due": 3, "oldest_due_age_s": 600}
OLD_EU = {"region": "eu-west-1", "due": 9, "oldest_due_age_s": 900}
NO_TICK = "no tick finished in the last 180 s (pg_cron or the platform cron; not this instance)"
NOT_DELIVERED = "not delivered by this relay now (breaker not closed, disabled or not configured)"


def later(*args: Any, **kwargs: Any) -> Callable[[], Snapshot]:
    """snapshot(*args, **kwargs) when the test runs (its ages count from then)."""
    return lambda: snapshot(*args, **kwargs)


# (what, snapshot, relay (None: no relay in this process), status, reasons, warnings,
#  waiting: region -> why)
READINESS = [
    ("fresh facts, a recent tick", later(facts()), None, 200, [], [], {}),
    (
        "never read: the first read failed",
        later(None, read_at=None, database_ok=False, error="cannot connect to the database"),
        None,
        503,
        ["database: cannot connect to the database"],
        [],
        {},
    ),
    (
        "the latest read failed: the facts kept are not trusted",
        later(facts(), database_ok=False, error="a query ran past the statement timeout"),
        None,
        503,
        ["database: a query ran past the statement timeout"],
        [],
        {},
    ),
    (
        "facts too old",
        later(facts(), age_s=100),
        None,
        503,
        ["database facts are 100 s old (limit 30 s)"],
        [],
        {},
    ),
    ("facts old, within the limit", later(facts(), age_s=29), None, 200, [], [], {}),
    (
        "no tick lately: pg_cron's trouble, a warning",
        later(facts(last_tick_age_s=181)),
        None,
        200,
        [],
        [NO_TICK],
        {},
    ),
    ("never a tick", later(facts(last_tick_age_s=None)), None, 200, [], [NO_TICK], {}),
    (
        "the schedule's troubles are warnings",
        later(facts(schedule={"overdue": 2, "unrouted": 1, "parked": 0})),
        None,
        200,
        [],
        [
            "2 active monitors overdue by more than 90 s (no tick took them): "
            "the scheduler's trouble, not this instance's",
            "1 due monitors no region can take: the scheduler's trouble, not this instance's",
        ],
        {},
    ),
    (
        "absent workers are warnings",
        later(facts(absent_workers={"eu-west-1": {"absent_s": 50.2, "routed_to": None}})),
        None,
        200,
        [],
        [
            "region eu-west-1: workers absent for 50 s, its monitors are not checked: "
            "the workers' trouble, not this instance's"
        ],
        {},
    ),
    (
        "an old backlog without a relay here: listed, not judged",
        later(facts(backlog=[OLD_US])),
        None,
        200,
        [],
        [],
        {"us-east-1": "no relay in this process"},
    ),
    (
        "an old backlog of a region this relay delivers to",
        later(facts(backlog=[OLD_US])),
        relay_with(region("us-east-1")),
        503,
        ["region us-east-1: oldest due job waits 600 s"],
        [],
        {},
    ),
    (
        "old backlogs of two regions this relay delivers to",
        later(facts(backlog=[OLD_US, OLD_EU])),
        relay_with(region("us-east-1"), region("eu-west-1")),
        503,
        [
            "region us-east-1: oldest due job waits 600 s",
            "region eu-west-1: oldest due job waits 900 s",
        ],
        [],
        {},
    ),
    (
        "a backlog at the limit",
        later(facts(backlog=[OLD_US | {"oldest_due_age_s": 120}])),
        relay_with(region("us-east-1")),
        200,
        [],
        [],
        {},
    ),
    (
        "a region this relay's breaker keeps shut, one disabled, one not configured here",
        later(facts(backlog=[OLD_US, OLD_EU, OLD_EU | {"region": "ap-south-1", "due": 1}])),
        relay_with(region("us-east-1", breaker_open=True), region("eu-west-1", enabled=False)),
        200,
        [],
        [],
        {"us-east-1": NOT_DELIVERED, "eu-west-1": NOT_DELIVERED, "ap-south-1": NOT_DELIVERED},
    ),
    (
        "a region another relay marked unhealthy",
        later(facts(backlog=[OLD_US, OLD_EU], unhealthy_regions={"eu-west-1": 30.0})),
        relay_with(region("us-east-1"), region("eu-west-1")),
        503,
        ["region us-east-1: oldest due job waits 600 s"],
        [],
        {"eu-west-1": "region marked unhealthy (outage)"},
    ),
    (
        "the relay stops",
        later(facts()),
        relay_with(region("us-east-1"), stopping=True),
        503,
        ["shutting down"],
        [],
        {},
    ),
]


@pytest.mark.parametrize(
    ("shown", "relay", "status", "reasons", "warnings", "waiting"),
    [case[1:] for case in READINESS],
    ids=[case[0] for case in READINESS],
)
async def test_readyz_reasons(client, nowhere, shown, relay, status, reasons, warnings, waiting):
    app = OpsApp(nowhere, SETTINGS, relay=relay)
    app.facts.snapshot = shown()
    response = await (await client(app)).get("/readyz")
    body = response.json()
    assert (response.status_code, body["ready"]) == (status, status == 200)
    assert body["reasons"] == reasons
    assert body["warnings"] == warnings
    assert {code: seen["why"] for code, seen in body["waiting"].items()} == waiting


async def test_readyz_waits_for_the_first_read_of_a_starting_app(client, nowhere):
    app = OpsApp(nowhere, SETTINGS)
    http = await client(app)
    asking = asyncio.create_task(http.get("/readyz"))
    await asyncio.sleep(0.05)
    assert not asking.done()  # not "not read yet": the first read is under way
    app.facts.snapshot = snapshot(facts())
    app.facts.refreshed.set()
    response = await asyncio.wait_for(asking, 5)
    assert response.status_code == 200
    assert response.json()["facts_age_s"] == pytest.approx(1.0, abs=0.5)


# ------------------------------------------------------------------ /metrics


async def test_metrics_are_prometheus_text_with_the_facts(client):
    metrics.publish_facts(
        {"backlog": [{"region": "metrics-probe", "due": 7, "oldest_due_age_s": 3}]}
    )
    response = await (await client()).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'pgpulse_outbox_backlog{region="metrics-probe"} 7.0' in response.text
    assert 'pgpulse_outbox_oldest_due_age_seconds{region="metrics-probe"} 3.0' in response.text
    assert "pgpulse_build_info{version=" in response.text


# ------------------------------------------------------------------ the tick trigger


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# (what, CRON_SECRET configured, request headers, status)
TRIGGERS = [
    ("no secret configured", None, {}, 503),
    ("no secret configured, any token", None, bearer("anything"), 503),
    ("no header", CRON_SECRET, {}, 401),
    ("a wrong token", CRON_SECRET, bearer("cron-s3cret-wrong"), 401),
    ("the secret's prefix", CRON_SECRET, bearer(CRON_SECRET[:-1]), 401),
    ("the secret and more", CRON_SECRET, bearer(CRON_SECRET + "0"), 401),
    ("the secret without its scheme", CRON_SECRET, {"Authorization": CRON_SECRET}, 401),
    ("two spaces", CRON_SECRET, {"Authorization": f"Bearer  {CRON_SECRET}"}, 401),
    (
        "the secret as a Basic password",
        CRON_SECRET,
        {"Authorization": "Basic " + base64.b64encode(f"x:{CRON_SECRET}".encode()).decode()},
        401,
    ),
    ("the secret in another header", CRON_SECRET, {"X-Cron-Secret": CRON_SECRET}, 401),
]


@pytest.mark.parametrize(
    ("secret", "headers", "status"),
    [case[1:] for case in TRIGGERS],
    ids=[case[0] for case in TRIGGERS],
)
async def test_the_tick_trigger_refuses_without_the_secret(
    client, nowhere, caplog, secret, headers, status
):
    """A refused request never reaches the database: `nowhere` would answer 500."""
    caplog.set_level(logging.INFO, logger="pgpulse")
    app = app_for(nowhere, dataclasses.replace(SETTINGS, cron_secret=secret))
    response = await (await client(app)).post("/api/cron/scheduler", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {"error": "unauthorized"}
        assert response.headers["www-authenticate"] == "Bearer"
        assert [r.getMessage() for r in caplog.records] == ["cron_trigger_refused"]
    else:
        assert response.json() == {"error": "CRON_SECRET is not configured"}
    assert CRON_SECRET not in response.text + str(response.headers)


async def test_the_right_secret_runs_a_tick_whose_failure_hides_the_password(client, nowhere):
    response = await (await client(app_for(nowhere))).post(
        "/api/cron/scheduler", headers=bearer(CRON_SECRET)
    )
    assert response.status_code == 500
    # the caller holds the secret: it is told where the tick could not connect, not how
    assert "cannot connect to postgresql://dbuser-7c1e:***@" in response.json()["error"]
    assert "pw-9a8b7c6d" not in response.text and CRON_SECRET not in response.text


# ------------------------------------------------------------------ the status page


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


PROXIED = {"X-Forwarded-For": "198.51.100.4"}

# (what, peer, PGPULSE_STATUS_SECRET, request headers, status)
STATUS_PAGE = [
    ("this host", ("127.0.0.1", 5000), None, {}, 200),
    ("this host over IPv6", ("::1", 5000), None, {}, 200),
    ("this host, through a proxy", ("127.0.0.1", 5000), None, PROXIED, 403),
    ("this host, a Forwarded header", ("127.0.0.1", 5000), None, {"Forwarded": "for=x"}, 403),
    ("another host, no secret set", REMOTE, None, {}, 403),
    ("another host, no password", REMOTE, STATUS_SECRET, {}, 401),
    ("another host, a wrong password", REMOTE, STATUS_SECRET, basic("ops", "nope"), 401),
    ("another host, the password", REMOTE, STATUS_SECRET, basic("ops", STATUS_SECRET), 200),
    ("any user name", REMOTE, STATUS_SECRET, basic("", STATUS_SECRET), 200),
    (
        "no colon in the credentials",
        REMOTE,
        STATUS_SECRET,
        {"Authorization": "Basic " + base64.b64encode(STATUS_SECRET.encode()).decode()},
        401,
    ),
    ("not base64", REMOTE, STATUS_SECRET, {"Authorization": "Basic %%%"}, 401),
    ("the password as a bearer", REMOTE, STATUS_SECRET, bearer(STATUS_SECRET), 401),
    (
        "through a proxy, the password",
        ("127.0.0.1", 5000),
        STATUS_SECRET,
        PROXIED | basic("o", STATUS_SECRET),
        200,
    ),
    ("a peer that is no address", ("testclient", 1), None, {}, 403),
]


@pytest.mark.parametrize(
    ("peer", "secret", "headers", "status"),
    [case[1:] for case in STATUS_PAGE],
    ids=[case[0] for case in STATUS_PAGE],
)
async def test_who_sees_the_status_page(client, nowhere, peer, secret, headers, status):
    app = app_for(
        nowhere,
        dataclasses.replace(SETTINGS, status_secret=secret),
        facts=None,
        database_ok=False,
        error="cannot connect to the database",
    )
    response = await (await client(app, peer)).get("/", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>pgpulse status</title>" in response.text
        policy = response.headers["content-security-policy"]
        assert "style-src 'sha256-" in policy and "script-src" not in policy
    else:
        assert "PGPULSE_STATUS_SECRET" in response.json()["error"]
        assert "pgpulse status" not in response.text  # nothing of the page
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="pgpulse"'
    assert STATUS_SECRET not in response.text


# ------------------------------------------------------------------ no secret in any answer


async def test_no_answer_names_the_database_or_a_secret(client, nowhere):
    """Every route, refused or not, with the facts of a database that cannot be reached."""
    settings = dataclasses.replace(SETTINGS, status_secret=STATUS_SECRET)
    app = OpsApp(nowhere, settings)
    await app.facts.refresh()  # a real connection attempt, refused
    assert app.facts.snapshot.error == "cannot connect to the database"
    local, remote = await client(app), await client(app, REMOTE)
    answers = [
        await local.get("/readyz"),
        await local.get("/metrics"),
        await local.get("/healthz"),
        await local.get("/nope"),
        await local.get("/"),
        await remote.get("/", headers=basic("ops", STATUS_SECRET)),
        await remote.get("/", headers=basic("ops", "wrong")),
        await local.post("/api/cron/scheduler"),
        await local.post("/api/cron/scheduler", headers=bearer("wrong")),
    ]  # the trigger with the secret: test_the_right_secret_runs_a_tick_whose_failure_...
    assert answers[0].json()["reasons"] == ["database: cannot connect to the database"]
    address = nowhere.split("@")[1].split("/")[0]  # 127.0.0.1:port
    for response in answers:
        seen = response.text + str(response.headers)
        for private in (
            "dbuser-7c1e",
            "pw-9a8b7c6d",
            "/nowhere",
            address,
            CRON_SECRET,
            STATUS_SECRET,
        ):
            assert private not in seen, (response.request.url, private)
        if response.request.url.path != "/":  # the page names this host as the one it serves
            assert "127.0.0.1" not in seen


async def test_a_secret_that_reaches_a_body_by_any_path_is_masked(client, nowhere):
    """Bodies are scrubbed of the secrets the app knows (the database password, CRON_SECRET)
    before they are encoded: an error text is the likeliest carrier."""
    leaky = f"the server said: bad password 'pw-9a8b7c6d', then {CRON_SECRET}"
    app = app_for(nowhere, facts=facts(), database_ok=False, error=leaky)
    response = await (await client(app)).get("/readyz")
    assert response.json()["reasons"] == ["database: the server said: bad password '***', then ***"]
