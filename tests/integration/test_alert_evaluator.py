"""The alert evaluator in-process (relay.ops.alerts.Evaluator) against a real database: the
lease decides who announces, the facts it reads fire the rules, and an outage is announced
without resolving what only the database can judge. One round is one `step()`: no timers.
Killed, frozen and restarted relays and a stopped PostgreSQL: tests/ops/test_alerts.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from relay.config import OpsSettings
from relay.ops.alerts import Alerter, Evaluator
from relay.schedule.tick import TickParams, run_tick
from tests.support.seeding import add_regions, insert_jobs

# one round a step; the lease outlives 3 rounds and 2 s, so it holds through a test
SETTINGS = OpsSettings(
    alert_interval_s=0.1,
    alert_database_down_s=0,
    alert_webhook_url="https://hooks.example.invalid/alerts",
)


class Webhook:
    """Records the announcements POSTed to it (at httpx's transport seam)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(204)

    def said(self) -> list[tuple[str, str]]:
        return [(b["status"], b["key"]) for b in self.bodies]


@pytest.fixture
def webhook() -> Webhook:
    return Webhook()


@pytest.fixture
def nowhere() -> Iterator[str]:
    """A database URL whose port refuses connections (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/gone?connect_timeout=2"


@pytest.fixture
async def evaluators(webhook) -> AsyncIterator[Any]:
    """await evaluators(dsn, breakers, **settings): an Evaluator announcing to the webhook,
    with these breakers of its relay open; closed after the test."""
    made: list[Evaluator] = []

    async def make(dsn: str, breakers: dict[str, float] | None = None, **settings) -> Evaluator:
        chosen = dataclasses.replace(SETTINGS, **settings)
        alerter = Alerter(chosen, transport=httpx.MockTransport(webhook))
        evaluator = Evaluator(dsn, chosen, lambda: dict(breakers or {}), alerter)
        made.append(evaluator)
        return evaluator

    yield make
    for evaluator in made:
        await evaluator.aclose()


def tick(db_url: str) -> None:
    run_tick(db_url, TickParams())


async def test_only_the_lease_holder_announces_and_a_clean_stop_hands_over(
    conn, db_url, webhook, evaluators, caplog
):
    caplog.set_level(logging.INFO, logger="pgpulse")
    first, second = await evaluators(db_url), await evaluators(db_url)
    await first.step()  # no tick ever: the dead-man's switch
    await second.step()
    await first.step()
    assert (first.leader, second.leader) == (True, False)
    assert webhook.said() == [("firing", "deadman")]

    tick(db_url)
    await second.step()
    await first.step()
    assert webhook.said() == [("firing", "deadman"), ("resolved", "deadman")]
    tick_id = conn.execute("SELECT max(id) AS id FROM pgpulse.tick_runs").fetchone()["id"]
    logged = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]
    assert [name for name, _ in logged] == [
        "alert_evaluator_elected",
        "alert_firing",
        "tick_finished",  # ticks from anywhere show in the evaluator's logs
        "alert_resolved",
    ]
    assert logged[2][1]["run_id"] == tick_id

    await first.aclose()  # gives the lease up: the other takes it at its next round
    conn.execute("DELETE FROM pgpulse.tick_runs")
    await second.step()
    assert second.leader
    assert webhook.said()[2:] == [("firing", "deadman")]


async def test_a_slow_tick_and_an_old_backlog_fire_and_the_backlog_resolves(
    conn, db_url, webhook, evaluators
):
    add_regions(conn, "us-east-1", {"eu-west-1": "us-east-1"})
    conn.execute(
        "INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms)"
        " VALUES ('pg_cron', now() - interval '40 seconds', now(), 45000, 60000)"
    )
    insert_jobs(conn, 1, "eu-west-1", deliver_in_s=-600, allow_fallback=False)
    evaluator = await evaluators(db_url, alert_backlog_age_s=60)
    await evaluator.step()
    assert webhook.said() == [("firing", "tick_budget"), ("firing", "backlog_age:eu-west-1")]
    budget, backlog = webhook.bodies
    assert 0.8 < budget["details"]["budget_used"] < 1  # 40 s of a 45 s budget
    assert backlog["details"]["region"] == "eu-west-1"
    assert backlog["details"]["oldest_due_age_s"] >= 600

    conn.execute("DELETE FROM pgpulse.outbox")
    await evaluator.step()
    await evaluator.step()
    assert webhook.said()[2:] == [("resolved", "backlog_age:eu-west-1")]


async def test_the_evaluator_announces_an_outage_and_keeps_what_needs_the_database(
    db_url, nowhere, webhook, evaluators
):
    evaluator = await evaluators(db_url, breakers={"eu-west-1": 61.0})
    await evaluator.step()
    assert webhook.said() == [("firing", "deadman"), ("firing", "breaker_open:eu-west-1")]

    evaluator.dsn = nowhere  # the database goes away under a connection in use
    await evaluator._drop_connection()
    evaluator.breakers_open_s = dict  # the breaker closes meanwhile
    await evaluator.step()
    await evaluator.step()
    assert evaluator.leader  # still: nobody else can take the lease
    assert webhook.said()[2:] == [
        ("firing", "database_unreachable"),
        ("resolved", "breaker_open:eu-west-1"),  # judged without the database
    ]  # the dead-man's switch is neither resolved nor announced again

    evaluator.dsn = db_url
    await evaluator.step()
    assert webhook.said()[4:] == [("resolved", "database_unreachable")]
    assert "deadman" in evaluator.alerter.firing


async def test_each_outage_is_timed_from_its_own_start(db_url, nowhere, webhook, evaluators):
    evaluator = await evaluators(db_url, alert_database_down_s=30)
    tick(db_url)
    await evaluator.step()
    announced = 0
    for _outage in range(2):
        evaluator.dsn = nowhere
        await evaluator._drop_connection()
        await evaluator.step()
        assert len(webhook.said()) == announced  # down for under 30 s: not yet
        assert evaluator.down_since is not None
        evaluator.down_since -= 31  # as if 31 s had passed (monotonic seconds)
        await evaluator.step()
        evaluator.dsn = db_url
        await evaluator.step()
        assert webhook.said()[announced:] == [
            ("firing", "database_unreachable"),
            ("resolved", "database_unreachable"),
        ]
        announced += 2


async def test_a_relay_started_into_an_outage_reports_it_then_leaves_it_to_the_evaluator(
    db_url, nowhere, webhook, evaluators
):
    holder = await evaluators(db_url)
    latecomer = await evaluators(nowhere, breakers={"eu-west-1": 61.0})
    tick(db_url)
    await holder.step()
    await latecomer.step()  # it cannot know whether an evaluator exists: it says so
    assert webhook.said() == [
        ("firing", "database_unreachable"),
        ("firing", "breaker_open:eu-west-1"),
    ]

    latecomer.dsn = db_url
    await latecomer.step()
    await holder.step()
    assert (holder.leader, latecomer.leader) == (True, False)
    # its own outage resolved; the breaker is the evaluator's to announce from now on
    assert webhook.said()[2:] == [("resolved", "database_unreachable")]
    assert latecomer.alerter.firing == {}
