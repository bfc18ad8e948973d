"""The operations side behind a real PgBouncer in transaction mode, where a server session
serves whichever client comes next: the alert evaluators' election (a lease row, never a
session lock) and its hand-over, doctor (which says it is behind a pooler and whether the
settings fit) and status."""

from __future__ import annotations

import json
import signal

from tests.support.bouncer import through
from tests.support.cli import pgpulse
from tests.support.dsn import as_user
from tests.support.ops import FAST_ALERTS, LOGINS
from tests.support.ops import doctor_checks as lines
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for

POOLED = {"PGPULSE_LISTEN": "off", "PGPULSE_POOL_SIZE": "3"}


def lease_holder(conn) -> int | None:
    """The pid of the process that holds the evaluator's lease now (None: nobody)."""
    row = conn.execute(
        "SELECT holder FROM pgpulse.leases WHERE name = 'alert-evaluator'"
        " AND expires_at > clock_timestamp()"
    ).fetchone()
    return int(row["holder"].split(":")[1]) if row else None


def test_two_evaluators_behind_pgbouncer_elect_one_and_hand_over(
    conn, db_url, regions, relay_env, bouncer, start_service, receiver
):
    env = (
        relay_env
        | POOLED
        | FAST_ALERTS
        | {"DATABASE_URL": through(db_url, bouncer), "PGPULSE_ALERT_WEBHOOK_URL": receiver.url}
    )
    first, second = start_service("relay", env=env), start_service("relay", env=env)
    wait_for(lambda: receiver.of("deadman", "firing"), 20, "the dead-man alert")
    # many rounds of both (0.2 s apart; the pooler hands each round any server session):
    # still one evaluator, one webhook (a session advisory lock elected both here)
    rounds = conn.execute("SELECT clock_timestamp() + interval '3 s' AS t").fetchone()["t"]
    wait_for(
        lambda: conn.execute("SELECT clock_timestamp() > %s AS yes", (rounds,)).fetchone()["yes"],
        10,
        "fifteen rounds",
    )
    assert len(receiver.of("deadman", "firing")) == 1
    elected = [p for p in (first, second) if p.has_event("alert_evaluator_elected")]
    assert len(elected) == 1
    leader = elected[0]
    follower = second if leader is first else first
    assert lease_holder(conn) == leader.pid

    # the evaluator freezes (it stops renewing): the other takes over when the lease expires
    # and announces the incident it finds (it cannot know what the frozen one announced)
    mark = len(receiver.received)
    leader.signal(signal.SIGSTOP)
    wait_for(lambda: lease_holder(conn) == follower.pid, 30, "the hand-over")
    wait_for(lambda: receiver.since(mark, "deadman", "firing"), 20, "the new evaluator's firing")
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: receiver.since(mark, "deadman", "resolved"), 20, "its resolve")
    # the frozen one wakes up, finds the lease gone and keeps quiet
    leader.signal(signal.SIGCONT)
    wait_for(lambda: leader.has_event("alert_evaluator_handed_over"), 20, "the old one to yield")

    # each incident once, each announced by the one evaluator (waits for each step: a tick
    # that came before the evaluator saw the gap would leave nothing to announce)
    mark = len(receiver.received)
    conn.execute("DELETE FROM pgpulse.tick_runs")
    wait_for(lambda: receiver.since(mark, "deadman", "firing"), 20, "the second incident")
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: receiver.since(mark, "deadman", "resolved"), 20, "its resolve")
    assert len(receiver.since(mark, "deadman")) == 2

    # the new evaluator dies without a goodbye: the first one is elected again
    follower.kill()
    wait_for(lambda: lease_holder(conn) == leader.pid, 30, "the hand-over back")
    mark = len(receiver.received)
    conn.execute("DELETE FROM pgpulse.tick_runs")
    wait_for(lambda: receiver.since(mark, "deadman", "firing"), 20, "the third incident")
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: receiver.since(mark, "deadman", "resolved"), 20, "its resolve")
    assert len(receiver.since(mark, "deadman")) == 2
    assert not [
        e
        for e in leader.events()
        if e.get("level") == "error" or e["event"] == "alerts_database_unreachable"
    ]
    leader.stop()  # a clean stop gives the lease up at once
    assert lease_holder(conn) is None


def test_doctor_and_status_pass_through_pgbouncer_and_say_so(
    conn, db_url, regions, relay_env, bouncer
):
    """doctor through the pooler: no prepared statement meets another client's, and it
    says it is behind a pooler in transaction mode, and whether PGPULSE_LISTEN fits."""
    conn.execute(LOGINS)
    add_monitors(conn, 5)
    assert pgpulse("tick", env=relay_env).returncode == 0
    env = relay_env | {"DATABASE_URL": through(as_user(db_url, "relay_app"), bouncer)}

    # twice each, as the migrating role and as the relay's: a server session keeps what
    # one client prepared, for the next client to meet ('prepared statement "_pg3_0"
    # already exists' failed the rights check of every run after the first)
    for url in (through(db_url, bouncer), env["DATABASE_URL"]):
        for _ in range(2):
            fitting = pgpulse("doctor", env=env | POOLED | {"DATABASE_URL": url})
            checks = lines(fitting.stdout)
            assert fitting.returncode == 0, fitting.stdout + fitting.stderr
            assert "prepared statement" not in fitting.stdout
    assert checks["pooler"] == (
        "ok",
        "behind a connection pooler (the server's backend pid is not the one it gave), in "
        "transaction mode (server sessions change hands between transactions): "
        "PGPULSE_LISTEN=off fits (run `pgpulse migrate` over a direct or session-mode "
        "connection)",
    )
    assert checks["role rights"] == ("ok", "everything the relay reads and writes")

    listening = pgpulse("doctor", env=env | {"PGPULSE_LISTEN": "on"})
    checks = lines(listening.stdout)
    assert listening.returncode == 1
    assert checks["pooler"][0] == "FAIL"
    assert checks["pooler"][1].endswith("set PGPULSE_LISTEN=off")
    assert [name for name, (verdict, _) in checks.items() if verdict == "FAIL"] == ["pooler"]

    status = pgpulse("status", "--json", env=env | POOLED)
    assert status.returncode == 0, status.stderr
    snapshot = json.loads(status.stdout)
    assert sum(b["waiting"] for b in snapshot["backlog"]) == 5
    assert snapshot["recent_ticks"][0]["jobs_written"] == 5
