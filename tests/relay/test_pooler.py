"""Behind PgBouncer in transaction mode (a real pgbouncer, started here) LISTEN never fires
and server-side prepared statements break: with PGPULSE_LISTEN=off the relay polls,
prepares nothing and keeps to its pool size, and every job is delivered exactly once."""

from __future__ import annotations

import signal

import psycopg

from tests.support.bouncer import through
from tests.support.hijacks import hijack_calls, planted
from tests.support.processes import Relays
from tests.support.queues import assert_exactly_once
from tests.support.seeding import insert_jobs, insert_monitors, tick
from tests.support.waiting import wait_for


def test_relay_behind_pgbouncer_in_transaction_mode_delivers_every_job_once(
    conn, db_url, regions, bouncer, upstash, queues, tmp_path
):
    pooled_url = through(db_url, bouncer)
    relays = Relays(pooled_url, upstash.url, tmp_path)
    insert_monitors(conn, 3000)
    first = tick(conn, lookahead_s=0)
    try:
        relay = relays.start(listen="off", pool_size=3, batch_size=200)
        wait_for(
            lambda: queues.total() >= first["jobs_written"],
            timeout=60,
            what="the first tick's jobs in the queues",
            on_timeout=relays.tails,
        )
        # a second tick, itself through the pooler: its jobs are found by polling (no NOTIFY
        # reaches the relay), many claims later than psycopg would have prepared statements
        conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
        with psycopg.connect(pooled_url, autocommit=True) as pooled:
            pooled.execute("CALL pgpulse.tick(NULL, 'pooled', '45 seconds', '0 seconds', 500)")
        total = (
            first["jobs_written"]
            + conn.execute(
                "SELECT jobs_written FROM pgpulse.tick_runs WHERE trigger = 'pooled'"
            ).fetchone()["jobs_written"]
        )
        wait_for(
            lambda: queues.total() >= total,
            timeout=60,
            what="the pooled tick's jobs in the queues",
            on_timeout=relays.tails,
        )
        found = queues.all()
        assert_exactly_once(queues, {p.job["job_id"] for p in found})
        assert len(found) == total == 6000
        assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0
        # (the alert rules report their findings as warnings: tests/ops/test_behind_pgbouncer.py)
        errors = [
            e
            for e in relay.events()
            if e.get("level") in ("warning", "error") and not e["event"].startswith("alert")
        ]
        assert not errors, errors[:3]
        assert relay.has_event("relay_started", listen=False, pool_size=3)
        relay.signal(signal.SIGTERM)
        assert relay.wait(30) == 0
    finally:
        relays.cleanup()


def test_behind_pgbouncer_planted_operators_never_run_and_no_setting_reaches_other_clients(
    conn, db_url, regions, bouncer, upstash, queues, tmp_path
):
    """Issue 26 finding 1: the search_path is pinned per transaction, so it holds behind a
    transaction-mode pooler (a session SET would be lost between transactions) and nothing
    of it stays on the server connections that the pooler's other clients get next."""
    pooled_url = through(db_url, bouncer)
    relays = Relays(pooled_url, upstash.url, tmp_path)
    jobs = set(insert_jobs(conn, 200, "us-east-1", tag="pooled"))
    jobs |= set(insert_jobs(conn, 50, "eu-west-1", tag="pooled"))
    tick(conn, lookahead_s=0)  # a tick record for the alert rules' facts
    try:
        with planted(db_url):
            relay = relays.start(
                listen="off", pool_size=3, batch_size=20, alert_interval_s=0.2, log_level="INFO"
            )
            wait_for(
                lambda: queues.total() >= len(jobs),
                60,
                "the jobs in the queues",
                on_timeout=relays.tails,
            )
            calls = sorted({(c["called"], c["by_role"]) for c in hijack_calls(conn)})
            assert not calls, calls
            # the alert rules connect too (no startup options) and read the facts
            wait_for(lambda: relay.has_event("alert_evaluator_elected"), 30, "alert rules")
            wait_for(lambda: relay.has_event("tick_finished"), 30, "their facts")
            relay.signal(signal.SIGTERM)
            assert relay.wait(30) == 0
            calls = sorted({(c["called"], c["by_role"]) for c in hijack_calls(conn)})
            assert not calls, calls
        assert_exactly_once(queues, jobs)
        # every server connection the pooler has (4): the product's default path, no timeout
        clients = [psycopg.connect(pooled_url) for _ in range(4)]
        try:
            for client in clients:  # each in a transaction: each holds its own server session
                assert client.execute("SHOW search_path").fetchone()[0] == '"$user", public'
                assert client.execute("SHOW statement_timeout").fetchone()[0] == "0"
            pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in clients}
            assert len(pids) == 4
        finally:
            for client in clients:
                client.close()
    finally:
        relays.cleanup()
