"""How long vacuum has been held back, when PostgreSQL does not say (another role's session,
a replication slot), and the built-in rule over it."""

from __future__ import annotations

from relay.config import OpsSettings
from relay.ops.alerts import evaluate
from relay.ops.facts import held_back


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _row(holder="4242", xid="900", held_s=None, kind="session"):
    return [{"kind": kind, "holder": holder, "xid": xid, "xid_age": 57, "held_s": held_s,
             "detail": "shop"}]  # fmt: skip


def test_an_undated_holder_is_timed_from_first_sight_and_a_new_one_starts_again():
    clock = Clock()
    assert held_back(None, clock) is None
    assert held_back(_row(), clock)["held_s"] == 0
    clock.now += 400
    assert held_back(_row(), clock)["held_s"] == 400
    # the same session, a later transaction: a new holder
    assert held_back(_row(xid="950"), clock)["held_s"] == 0
    clock.now += 30
    assert held_back(_row(xid="950"), clock)["held_s"] == 30
    # nothing holds it: forgotten, so its return starts from 0
    assert held_back([], clock) is None
    assert held_back(_row(xid="950"), clock)["held_s"] == 0


def test_postgresqls_own_figure_wins_when_it_has_one():
    clock = Clock()
    assert held_back(_row(held_s=812.5), clock)["held_s"] == 812.5
    slot = held_back(_row(kind="replication slot", holder="standby1"), clock)
    assert (slot["kind"], slot["holder"], slot["xid_age"]) == ("replication slot", "standby1", 57)


def _facts(held_s):
    horizon = None
    if held_s is not None:
        horizon = {"kind": "session", "holder": "4242", "detail": "shop", "xid_age": 57,
                   "held_s": held_s}  # fmt: skip
    return {"last_tick_age_s": 5.0, "vacuum": horizon,
            "dead_tuples": {"outbox": 120_000, "schedule": 9}}  # fmt: skip


def _vacuum_findings(settings, facts):
    return [f for f in evaluate(settings, facts) if f.rule == "vacuum_held_back"]


def test_the_rule_fires_past_its_threshold_and_names_the_holder():
    settings = OpsSettings()
    assert settings.alert_vacuum_held_s == 120
    assert not _vacuum_findings(settings, _facts(None))
    assert not _vacuum_findings(settings, _facts(119.0))
    (finding,) = _vacuum_findings(settings, _facts(121.0))
    assert "session 4242" in finding.summary and "outbox 120000" in finding.summary
    assert finding.details["dead_tuples"] == {"outbox": 120_000, "schedule": 9}
    assert _vacuum_findings(OpsSettings(alert_vacuum_held_s=60), _facts(61.0))
