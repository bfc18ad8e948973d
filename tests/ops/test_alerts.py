"""Alerts from real `pgpulse relay` processes to a real local webhook receiver: a region's
breaker, a relay killed (the lease expires), PostgreSQL stopped and started. The rules, the
announcements and the lease in-process: tests/unit/test_alert_rules.py and
tests/integration/test_alert_evaluator.py."""

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from relay import migrate
from relay.local.embedded import EmbeddedPostgres
from tests.support.cli import pgpulse
from tests.support.ops import FAST_ALERTS
from tests.support.processes import Processes
from tests.support.regions import BY_CODE, take_down
from tests.support.seeding import add_monitors, add_regions
from tests.support.waiting import wait_for


def test_breaker_open_alert_while_a_region_is_down(
    conn, regions, relay_env, devserver, start_service, receiver
):
    add_monitors(conn, 20, preferred_region="eu-west-1")
    assert pgpulse("tick", env=relay_env).returncode == 0
    take_down(devserver, BY_CODE["eu-west-1"].token)
    env = relay_env | FAST_ALERTS | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url}
    start_service("relay", env=env)

    wait_for(lambda: receiver.of("breaker_open", "firing"), 30, "the breaker alert")
    alert = receiver.of("breaker_open", "firing")[0]
    assert alert["details"]["region"] == "eu-west-1"
    assert alert["key"] == "breaker_open:eu-west-1"
    # eu's jobs went to its fallback meanwhile
    wait_for(
        lambda: conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0,
        30,
        "rerouted jobs to leave the outbox",
    )

    devserver.clear_faults()
    wait_for(lambda: receiver.of("breaker_open", "resolved"), 30, "the breaker resolve")
    assert len(receiver.of("breaker_open", "firing")) == 1
    healthy = conn.execute(
        "SELECT healthy FROM pgpulse.regions WHERE code = 'eu-west-1'"
    ).fetchone()
    assert healthy["healthy"] is True


@pytest.fixture
def relays(tmp_path) -> Iterator[Processes]:
    """`pgpulse relay` processes without --http (alerts must not need it)."""
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


def alert_sessions(conn) -> dict[int, bool]:
    """Relay pid -> whether it holds the evaluator's lease (pgpulse.leases, unexpired)."""
    rows = conn.execute("""
        SELECT a.application_name,
               EXISTS (SELECT 1 FROM pgpulse.leases l WHERE l.name = 'alert-evaluator'
                          AND split_part(l.holder, ':', 2) = split_part(a.application_name, '-', 3)
                          AND l.expires_at > clock_timestamp()) AS holds
          FROM pg_stat_activity a
         WHERE a.application_name LIKE 'pgpulse-alerts-%%' AND a.datname = current_database()
    """).fetchall()
    return {int(r["application_name"].rsplit("-", 1)[1]): r["holds"] for r in rows}


def test_two_relays_send_one_webhook_per_incident_and_hand_over_when_one_dies(
    conn, regions, relay_env, receiver, relays
):
    env = relay_env | FAST_ALERTS | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url}
    first, second = relays.start("relay", env=env), relays.start("relay", env=env)
    wait_for(
        lambda: set(alert_sessions(conn)) == {first.pid, second.pid},
        30,
        "both relays' alert sessions",
    )
    wait_for(lambda: receiver.of("deadman", "firing"), 20, "the dead-man alert")
    # the other relay keeps asking for the lease and keeps being refused
    sessions = alert_sessions(conn)
    assert sorted(sessions.values()) == [False, True]
    follower_pid = next(pid for pid, holds in sessions.items() if not holds)
    asked = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    wait_for(
        lambda: conn.execute(
            "SELECT query_start >= %s + interval '1 second' AS yes FROM pg_stat_activity"
            " WHERE application_name = %s",
            (asked, f"pgpulse-alerts-{follower_pid}"),
        ).fetchone()["yes"],
        10,
        "the follower's tries for the lease",
    )
    assert alert_sessions(conn)[follower_pid] is False

    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: receiver.of("deadman", "resolved"), 20, "the dead-man resolve")
    assert len(receiver.of("deadman", "firing")) == 1
    assert len(receiver.of("deadman", "resolved")) == 1

    # the evaluator dies without a goodbye: the other relay takes over, still one webhook
    leader = next(p for p in (first, second) if p.pid != follower_pid)
    leader.kill()
    wait_for(lambda: alert_sessions(conn) == {follower_pid: True}, 30, "the handover")
    conn.execute("DELETE FROM pgpulse.tick_runs")
    wait_for(lambda: len(receiver.of("deadman", "firing")) == 2, 20, "the second incident")
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: len(receiver.of("deadman", "resolved")) == 2, 20, "its resolve")
    assert len(receiver.of("deadman", "firing")) == 2


def test_a_stopped_database_is_an_alert_and_breaker_rules_still_run(
    relay_env, devserver, receiver, relays
):
    """Issue 10 point 8: the database down suppressed every rule, the breaker's included."""
    with EmbeddedPostgres(fast=True) as pg:
        dsn = pg.dsn()
        migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as setup:
            add_regions(setup, "us-east-1", {"eu-west-1": None})
            add_monitors(setup, 20, preferred_region="eu-west-1")
        env = (
            relay_env
            | FAST_ALERTS
            | {
                "DATABASE_URL": dsn,
                "PGPULSE_ALERT_WEBHOOK_URL": receiver.url,
                "PGPULSE_ALERT_DATABASE_DOWN_S": "1",
                # the breaker opens under a second before the database stops: 8x that
                "PGPULSE_ALERT_BREAKER_OPEN_S": "8",
                "PGPULSE_ALERT_DEADMAN_S": "3600",
                "PGPULSE_BREAKER_COOLDOWN_S": "60",
            }
        )
        take_down(devserver, BY_CODE["eu-west-1"].token)
        assert pgpulse("tick", env=env).returncode == 0  # first: no relay ever sees "no tick yet"
        relays.start("relay", env=env), relays.start("relay", env=env)
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as watch:
            wait_for(lambda: len(alert_sessions(watch)) == 2, 30, "both alert sessions")
            wait_for(
                lambda: (
                    watch.execute(
                        "SELECT healthy FROM pgpulse.regions WHERE code = 'eu-west-1'"
                    ).fetchone()["healthy"]
                    is False
                ),
                30,
                "eu's breaker to open",
            )
        assert not receiver.of("breaker_open"), "the breaker alert came before the database stopped"

        pg.stop_postmaster("fast")
        wait_for(lambda: receiver.of("database_unreachable", "firing"), 30, "the database alert")
        wait_for(
            lambda: receiver.of("breaker_open", "firing"), 30, "the breaker alert, database down"
        )
        assert receiver.of("breaker_open", "firing")[0]["details"]["region"] == "eu-west-1"
        assert not receiver.of("deadman"), "a rule that needs the database fired blind"

        pg.start_postmaster()
        wait_for(
            lambda: receiver.of("database_unreachable", "resolved"), 30, "the database resolve"
        )
        assert len(receiver.of("database_unreachable", "firing")) == 1  # two relays, one alert
        assert len(receiver.of("breaker_open", "firing")) == 1
        devserver.clear_faults()
        relays.stop_all()
        assert '"event": "alert_evaluator_elected"' in relays.output
        assert "tok-eu" not in relays.output and receiver.url not in relays.output
