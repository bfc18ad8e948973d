"""The built-in alerts' decisions, in-process (relay.ops.alerts): which rules fire for which facts
(`evaluate`), what one round announces (`transitions`: once per incident, resolved once,
held open while the database cannot judge it), and the webhook each announcement becomes.
The evaluator's lease and facts against a real database: tests/integration/test_alert_evaluator.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from relay.backoff import Backoff
from relay.config import OpsSettings
from relay.ops import alerts
from relay.ops.alerts import NEEDS_DATABASE, Alerter, Finding, evaluate, transitions

SETTINGS = OpsSettings()  # deadman 180 s, budget 0.8, backlog 120 s, breaker 60 s, db 30 s


def healthy(**changes: Any) -> dict[str, Any]:
    """The facts of a database where nothing is wrong, with `changes`; `schedule` merges."""
    facts: dict[str, Any] = {
        "last_tick_age_s": 5.0,
        "latest_tick": {"id": 7, "budget_used": 0.1, "cut_short": False},
        "schedule": {
            "following": {"ok": True, "detail": "following"},
            "overdue": 0,
            "parked": 0,
            "parked_reason": None,
            "skipped": 0,
            "skip_detail": None,
            "tick_id": 7,
            "unrouted": 0,
            "follow_pending": 0,
            "follow_oldest_s": None,
        },
        "backlog": [],
        "unhealthy_regions": {},
        "absent_workers": {},
        "vacuum": None,
        "dead_tuples": {"outbox": 0, "schedule": 0},
    }
    schedule = changes.pop("schedule", {})
    facts["schedule"] = facts["schedule"] | schedule
    return facts | changes


def backlog(region: str, oldest: float | None, due: int = 3) -> dict[str, Any]:
    return {"region": region, "due": due, "oldest_due_age_s": oldest}


def horizon(held_s: float) -> dict[str, Any]:
    return {"kind": "session", "holder": "4242", "detail": "shop", "xid_age": 57, "held_s": held_s}


# (what, facts (None: the database cannot be read), this relay's open breakers,
#  seconds the database has been down, the keys that fire, in order)
RULES = [
    ("nothing wrong", healthy(), None, None, []),
    ("never ticked", healthy(last_tick_age_s=None), None, None, ["deadman"]),
    ("last tick at the dead-man threshold", healthy(last_tick_age_s=180.0), None, None, []),
    ("last tick past it", healthy(last_tick_age_s=180.5), None, None, ["deadman"]),
    (
        "budget used at the ratio",
        healthy(latest_tick={"id": 7, "budget_used": 0.8}),
        None,
        None,
        [],
    ),
    (
        "budget used past it",
        healthy(latest_tick={"id": 7, "budget_used": 0.81, "cut_short": True}),
        None,
        None,
        ["tick_budget"],
    ),
    (
        "a running tick (no budget figure yet)",
        healthy(latest_tick={"id": 7, "budget_used": None}),
        None,
        None,
        [],
    ),
    ("no tick row at all", healthy(latest_tick=None), None, None, []),
    (
        "backlog: each region on its own, strictly past the age",
        healthy(backlog=[backlog("eu", 121), backlog("us", 120), backlog("ap", None)]),
        None,
        None,
        ["backlog_age:eu"],
    ),
    ("overdue monitors", healthy(schedule={"overdue": 4}), None, None, ["monitors_overdue"]),
    (
        "parked monitors",
        healthy(schedule={"parked": 2, "parked_reason": "bad url"}),
        None,
        None,
        ["monitors_parked"],
    ),
    (
        "monitors the latest tick skipped",
        healthy(schedule={"skipped": 1, "skip_detail": "x"}),
        None,
        None,
        ["tick_skipped"],
    ),
    ("unroutable monitors", healthy(schedule={"unrouted": 3}), None, None, ["monitors_unrouted"]),
    (
        "following stopped",
        healthy(schedule={"following": {"ok": False, "detail": "trigger gone"}}),
        None,
        None,
        ["not_following"],
    ),
    (
        "bulk writes followed late, at the limit",
        healthy(schedule={"follow_pending": 9, "follow_oldest_s": 120}),
        None,
        None,
        [],
    ),
    (
        "bulk writes not followed past it",
        healthy(schedule={"follow_pending": 9, "follow_oldest_s": 121}),
        None,
        None,
        ["bulk_writes_not_followed"],
    ),
    (
        "workers absent, regions in order",
        healthy(
            absent_workers={
                "us": {"absent_s": 40.0, "routed_to": None},
                "ap": {"absent_s": None, "routed_to": "us"},
            }
        ),
        None,
        None,
        ["workers_absent:ap", "workers_absent:us"],
    ),
    ("vacuum held under its threshold", healthy(vacuum=horizon(119.9)), None, None, []),
    ("vacuum held at it", healthy(vacuum=horizon(120)), None, None, ["vacuum_held_back"]),
    ("own breaker open at the threshold", healthy(), {"eu": 60.0}, None, []),
    ("own breaker open past it", healthy(), {"eu": 60.5}, None, ["breaker_open:eu"]),
    (
        "another relay's breaker, marked in the database",
        healthy(unhealthy_regions={"us": 90.0}),
        {},
        None,
        ["breaker_open:us"],
    ),
    (
        "breakers of both, regions in order",
        healthy(unhealthy_regions={"us": 90.0, "eu": 5.0}),
        {"eu": 70.0, "ap": 1.0},
        None,
        ["breaker_open:eu", "breaker_open:us"],
    ),
    ("database down, not long enough", None, None, 29.9, []),
    ("database down, at the threshold", None, None, 30.0, ["database_unreachable"]),
    ("database down, how long unknown", None, None, None, []),
    (
        "database down: only the rules that need no database",
        None,
        {"eu": 61.0},
        45.0,
        ["database_unreachable", "breaker_open:eu"],
    ),
    (
        "everything at once, in the rules' order",
        healthy(
            last_tick_age_s=None,
            latest_tick={"id": 7, "budget_used": 0.95},
            schedule={"overdue": 1, "parked": 1, "skipped": 1, "unrouted": 1},
            vacuum=horizon(600),
            absent_workers={"eu": {"absent_s": 5.0, "routed_to": None}},
            backlog=[backlog("eu", 500)],
        ),
        {"eu": 61.0},
        None,
        [
            "deadman",
            "tick_budget",
            "monitors_overdue",
            "monitors_parked",
            "tick_skipped",
            "monitors_unrouted",
            "vacuum_held_back",
            "workers_absent:eu",
            "backlog_age:eu",
            "breaker_open:eu",
        ],
    ),
]


@pytest.mark.parametrize(
    ("facts", "breakers", "down_s", "keys"),
    [case[1:] for case in RULES],
    ids=[case[0] for case in RULES],
)
def test_which_rules_fire(facts, breakers, down_s, keys):
    assert [f.key for f in evaluate(SETTINGS, facts, breakers, down_s)] == keys


def test_thresholds_are_the_settings():
    strict = OpsSettings(
        alert_deadman_s=10,
        alert_tick_budget_ratio=0.5,
        alert_backlog_age_s=30,
        alert_breaker_open_s=1,
        alert_vacuum_held_s=5,
        alert_database_down_s=0,
    )
    facts = healthy(
        last_tick_age_s=11,
        latest_tick={"id": 7, "budget_used": 0.6},
        backlog=[backlog("eu", 31)],
        vacuum=horizon(5),
    )
    assert [f.rule for f in evaluate(strict, facts, {"eu": 2})] == [
        "deadman",
        "tick_budget",
        "vacuum_held_back",
        "backlog_age",
        "breaker_open",
    ]
    assert [f.key for f in evaluate(SETTINGS, facts, {"eu": 2})] == []
    assert [f.key for f in evaluate(strict, None, None, 0.0)] == ["database_unreachable"]


def test_what_a_finding_says():
    facts = healthy(
        last_tick_age_s=None,
        unhealthy_regions={"eu": 70.0},
        absent_workers={"ap": {"absent_s": 40.04, "routed_to": "us"}},
    )
    found = {f.key: f for f in evaluate(SETTINGS, facts, {"eu": 65.0})}
    assert found["deadman"].summary == "no tick has finished for ever"
    # the longer of this relay's figure and the database's
    assert found["breaker_open:eu"].details == {"region": "eu", "open_s": 70.0}
    assert found["workers_absent:ap"].details == {
        "region": "ap",
        "absent_s": 40.0,
        "routed_to": "us",
    }
    assert "go to us" in found["workers_absent:ap"].summary
    [outage] = evaluate(SETTINGS, None, None, 42.26)
    assert outage.details == {"down_s": 42.3}


def test_every_rule_over_database_facts_is_held_open_while_the_database_is_down():
    """A rule missing from NEEDS_DATABASE would be resolved by the first round of an outage
    (and fired again after it)."""
    everything_wrong = healthy(
        last_tick_age_s=None,
        latest_tick={"id": 7, "budget_used": 1.0},
        schedule={
            "overdue": 1,
            "parked": 1,
            "skipped": 1,
            "unrouted": 1,
            "following": {"ok": False, "detail": "x"},
            "follow_pending": 1,
            "follow_oldest_s": 1000,
        },
        vacuum=horizon(10_000),
        absent_workers={"eu": {"absent_s": 5.0, "routed_to": None}},
        backlog=[backlog("eu", 10_000)],
    )
    database_rules = {f.rule for f in evaluate(SETTINGS, everything_wrong)}
    assert database_rules == NEEDS_DATABASE
    outage_rules = {f.rule for f in evaluate(SETTINGS, None, {"eu": 1e6}, 1e6)}
    assert outage_rules == {"database_unreachable", "breaker_open"}
    assert not outage_rules & NEEDS_DATABASE


# ------------------------------------------------------------------ one round's announcements


def finding(key: str, summary: str = "") -> Finding:
    return Finding(key, key.split(":")[0], summary or key, {})


def needs_database(f: Finding) -> bool:
    return f.rule in NEEDS_DATABASE


# (what, keys firing, keys found this round, keep, fired, resolved)
ROUNDS = [
    ("a new incident fires", [], ["deadman"], None, ["deadman"], []),
    ("found again: announced once", ["deadman"], ["deadman"], None, [], []),
    ("gone: resolved", ["deadman"], [], None, [], ["deadman"]),
    (
        "one region's incident apart from another's",
        ["breaker_open:eu"],
        ["breaker_open:eu", "breaker_open:us"],
        None,
        ["breaker_open:us"],
        [],
    ),
    (
        "new ones in the findings' order, resolved in the order they fired",
        ["backlog_age:eu", "deadman", "backlog_age:us"],
        ["tick_skipped", "deadman", "monitors_parked"],
        None,
        ["tick_skipped", "monitors_parked"],
        ["backlog_age:eu", "backlog_age:us"],
    ),
    (
        "database down: its rules held open, the rest resolve",
        ["deadman", "backlog_age:eu", "breaker_open:eu"],
        ["database_unreachable"],
        needs_database,
        ["database_unreachable"],
        ["breaker_open:eu"],
    ),
]


@pytest.mark.parametrize(
    ("firing", "found", "keep", "fired", "resolved"),
    [case[1:] for case in ROUNDS],
    ids=[case[0] for case in ROUNDS],
)
def test_what_one_round_announces(firing, found, keep, fired, resolved):
    before = {key: finding(key) for key in firing}
    args = (before, [finding(key) for key in found]) + ((keep,) if keep else ())
    new, gone = transitions(*args)
    assert [f.key for f in new] == fired
    assert [f.key for f in gone] == resolved
    assert list(before) == firing  # a decision, nothing changed


def test_an_incident_whose_figures_change_is_not_announced_again():
    firing = {"deadman": finding("deadman", "no tick for 200 s")}
    assert transitions(firing, [finding("deadman", "no tick for 400 s")]) == ([], [])


# ------------------------------------------------------------------ the announcements sent


class Webhook:
    """A webhook endpoint at httpx's transport seam: answers each POST with the next of
    `answers` (a status, or an exception to raise), and records the bodies."""

    URL = "https://hooks.example.invalid/services/T0/B0/s3cr3t-path"

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == self.URL
        self.bodies.append(json.loads(request.content))
        answer = self.answers.pop(0) if self.answers else 204
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(alerts, "WEBHOOK_RETRY", Backoff(first=0.001, most=0.001))


def alerter_posting_to(webhook: Webhook | None) -> Alerter:
    settings = OpsSettings(alert_webhook_url=Webhook.URL if webhook else None)
    transport = httpx.MockTransport(webhook or Webhook())
    return Alerter(settings, clock=lambda: 1_700_000_000.0, transport=transport)


def events(caplog) -> list[tuple[str, dict[str, Any]]]:
    return [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]


async def test_rounds_send_one_webhook_per_incident_and_one_resolve(caplog):
    caplog.set_level(logging.INFO, logger="pgpulse")
    webhook = Webhook()
    alerter = alerter_posting_to(webhook)
    deadman = evaluate(SETTINGS, healthy(last_tick_age_s=None))
    try:
        for _ in range(3):
            await alerter.update(deadman)
        await alerter.update([])
        await alerter.update([])
    finally:
        await alerter.aclose()
    assert [(b["status"], b["key"]) for b in webhook.bodies] == [
        ("firing", "deadman"),
        ("resolved", "deadman"),
    ]
    assert webhook.bodies[0] == {
        "source": "pgpulse",
        "status": "firing",
        "alert": "deadman",
        "key": "deadman",
        "summary": "no tick has finished for ever",
        "details": {"last_tick_age_s": None, "threshold_s": 180.0},
        "at": "2023-11-14T22:13:20Z",
    }
    assert [name for name, _ in events(caplog)] == ["alert_firing", "alert_resolved"]
    assert "s3cr3t-path" not in json.dumps(events(caplog))


async def test_without_a_webhook_alerts_are_logged_only(caplog):
    caplog.set_level(logging.INFO, logger="pgpulse")
    alerter = alerter_posting_to(None)
    try:
        await alerter.update([finding("breaker_open:eu")])
        alerter.forget()  # another relay evaluates now: nothing of this one's is resolved
        await alerter.update([])
    finally:
        await alerter.aclose()
    assert events(caplog) == [
        (
            "alert_firing",
            {"alert": "breaker_open", "key": "breaker_open:eu", "summary": "breaker_open:eu"},
        )
    ]


# (what, the endpoint's answers in turn, POSTs made, whether the failure is logged)
DELIVERIES = [
    ("accepted", [204], 1, False),
    ("a 5xx is tried again", [503, 200], 2, False),
    ("no answer is tried again", [httpx.ConnectError("refused"), 204], 2, False),
    ("three 5xx: given up, said so", [500, 502, 503], 3, True),
    (
        "never reached: given up, said so",
        [httpx.ReadTimeout("read"), httpx.ConnectError("refused"), httpx.ConnectError("x")],
        3,
        True,
    ),
    ("a 4xx is the endpoint's answer: not tried again", [400], 1, False),
]


@pytest.mark.parametrize(
    ("answers", "posts", "logged"),
    [case[1:] for case in DELIVERIES],
    ids=[case[0] for case in DELIVERIES],
)
async def test_webhook_delivery_retries(caplog, quick_retries, answers, posts, logged):
    caplog.set_level(logging.INFO, logger="pgpulse")
    webhook = Webhook(*answers)
    alerter = alerter_posting_to(webhook)
    try:
        await alerter.update([finding("deadman")])
    finally:
        await alerter.aclose()
    assert len(webhook.bodies) == posts
    assert all(body == webhook.bodies[0] for body in webhook.bodies)  # the same announcement
    assert ("alert_webhook_failed" in [name for name, _ in events(caplog)]) is logged
    assert "s3cr3t-path" not in json.dumps(events(caplog))
