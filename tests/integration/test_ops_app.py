"""The ops HTTP app in-process (relay.ops.http.OpsApp through httpx.ASGITransport) against a real
database: the trigger runs one tick with the secret only, and the app's one facts loop
(started and stopped as uvicorn's lifespan would) feeds /readyz and /metrics. Routes, auth
and readiness decisions without a database: tests/unit/test_ops_routes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from relay.config import OpsSettings
from relay.ops.http import OpsApp
from tests.support.seeding import add_monitors, add_regions

SECRET = "cron-secret-7d1e4f0a9b"
SETTINGS = OpsSettings(cron_secret=SECRET, facts_interval_s=0.05)


@pytest.fixture
def monitors(conn) -> int:
    add_regions(conn, "us-east-1", {"eu-west-1": "us-east-1"})
    add_monitors(conn, 20, due="-5 seconds")
    return 20


@pytest.fixture
async def app(db_url) -> AsyncIterator[OpsApp]:
    """The app with its facts loop running (its lifespan's startup), shut down after."""
    app = OpsApp(db_url, SETTINGS)
    await app.startup()
    yield app
    await asyncio.wait_for(app.shutdown(), 10)


@pytest.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops.test") as client:
        yield client


def count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) AS n FROM pgpulse.{table}").fetchone()["n"]


async def fresh_facts(app: OpsApp) -> None:
    """Until the loop has read the database again, after now: twice, since a read in flight
    when this is called may have begun before the caller's last write (it flaked so)."""
    for _ in range(2):
        app.facts.refreshed.clear()
        await asyncio.wait_for(app.facts.refreshed.wait(), 10)


async def test_the_trigger_runs_one_tick_with_the_secret_only(conn, monitors, http):
    url = "/api/cron/scheduler"
    refused = [
        await http.post(url),
        await http.post(url, headers={"Authorization": f"Bearer {SECRET[:-1]}x"}),
    ]
    assert [r.status_code for r in refused] == [401, 401]
    assert count(conn, "tick_runs") == 0

    ok = await http.post(url, headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200, ok.text
    record = ok.json()
    assert record["trigger"] == "http"
    assert (record["monitors_claimed"], record["jobs_written"]) == (monitors, monitors)
    assert (count(conn, "tick_runs"), count(conn, "outbox")) == (1, monitors)


async def test_the_facts_loop_feeds_readyz_and_metrics(conn, monitors, app, http):
    first = await http.get("/readyz")  # waits for the loop's first read
    assert first.status_code == 200, first.text
    assert any("no tick finished" in w for w in first.json()["warnings"])
    assert first.json()["facts_age_s"] < 5

    assert (
        await http.post("/api/cron/scheduler", headers={"Authorization": f"Bearer {SECRET}"})
    ).status_code == 200
    await fresh_facts(app)
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()["warnings"]) == (200, [])
    assert ready.json()["last_tick_age_s"] < 60
    text = (await http.get("/metrics")).text
    assert f"pgpulse_tick_monitors {float(monitors)}" in text
    assert 'pgpulse_outbox_backlog{region="us-east-1"}' in text

    # without a relay in this process, an old backlog is listed, not judged
    conn.execute("UPDATE pgpulse.outbox SET deliver_at = now() - interval '10 minutes'")
    await fresh_facts(app)
    stale = await http.get("/readyz")
    assert stale.status_code == 200
    assert {why["why"] for why in stale.json()["waiting"].values()} == {"no relay in this process"}


async def test_shutdown_ends_the_facts_loop_and_its_connection(db_url):
    app = OpsApp(db_url, SETTINGS)
    await app.startup()
    await fresh_facts(app)
    assert app.facts.conn is not None and not app.facts.conn.closed
    await asyncio.wait_for(app.shutdown(), 5)
    assert app.facts.conn is None
    assert app._facts_task is not None and app._facts_task.done()
