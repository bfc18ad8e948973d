"""Vacuum held back is loud: a product session that keeps a transaction open holds back
vacuum of pgpulse's tables (the outbox's deleted rows stay, VACUUM cannot remove them); the
facts name the holder and its age, as the relay's own least-privileged role reads them, the
metrics carry it and the dead rows, and the relay's built-in alert fires, then resolves
once the transaction ends."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.rows import dict_row

from relay.config import OpsSettings
from relay.ops import metrics
from relay.ops.alerts import evaluate
from relay.ops.facts import read_facts
from tests.support.waiting import wait_for

PRODUCT_ROLE = "shop_vacuum_app"
RELAY_ROLE = "relay_vacuum_app"

OUTBOX_ROWS = """
INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                            deliver_at, expires_at, payload)
SELECT gen_random_uuid(), gen_random_uuid(), 'us-east-1', 'normal', now(), now(),
       now() + interval '1 hour', '{}'
  FROM generate_series(1, %s)
"""


@pytest.fixture
def roles(conn):
    for role in (PRODUCT_ROLE, RELAY_ROLE):
        conn.execute(f"DROP ROLE IF EXISTS {role}")
    conn.execute(f"CREATE ROLE {PRODUCT_ROLE} LOGIN")
    conn.execute(f"CREATE ROLE {RELAY_ROLE} LOGIN IN ROLE pgpulse_relay")
    conn.execute("CREATE TABLE public.orders (id bigint)")
    conn.execute(f"GRANT INSERT ON public.orders TO {PRODUCT_ROLE}")
    yield
    conn.execute("DROP TABLE public.orders")
    for role in (PRODUCT_ROLE, RELAY_ROLE):
        conn.execute(f"DROP ROLE {role}")


def _as(db_url: str, role: str) -> str:
    return db_url.replace("postgres@", f"{role}@")


def _facts(url: str) -> dict:
    async def read() -> dict:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await read_facts(conn)

    return asyncio.run(read())


def _dead_outbox_rows(conn) -> int:
    return conn.execute(
        "SELECT n_dead_tup FROM pg_stat_all_tables"
        " WHERE schemaname = 'pgpulse' AND relname = 'outbox'"
    ).fetchone()["n_dead_tup"]


def _delete_outbox(conn) -> None:
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute("SELECT pg_stat_force_next_flush()")  # the counts reach the statistics now


def test_an_open_product_transaction_is_named_timed_and_its_dead_rows_counted(
    conn, db_url, regions, roles
):
    reports = [psycopg.connect(db_url) for _ in range(3)]  # listed before the product
    product = psycopg.connect(_as(db_url, PRODUCT_ROLE))
    for report in reports:
        report.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        product.execute("INSERT INTO public.orders VALUES (1)")  # open, with a transaction id
        pid = product.info.backend_pid
        # snapshots taken meanwhile (a report, the relay's own claims) need that id too: the
        # product's transaction, which owns it, is named, not one of them
        for report in reports:
            report.execute("SELECT count(*) FROM pgpulse.regions")
        conn.execute(OUTBOX_ROWS, (500,))
        _delete_outbox(conn)
        conn.execute("VACUUM pgpulse.outbox")
        # vacuum may not remove them: the product's transaction may still need them
        assert _dead_outbox_rows(conn) >= 500

        # the relay's own role may not see when the product's transaction started: it is
        # timed from when this process first saw it
        relay_view = _facts(_as(db_url, RELAY_ROLE))
        horizon = relay_view["vacuum"]
        assert horizon["kind"] == "session" and horizon["holder"] == str(pid)
        assert horizon["xid_age"] >= 1 and horizon["held_s"] < 60
        assert relay_view["dead_tuples"]["outbox"] >= 500
        # a role that may see it (here the superuser) reads its start: the time grows
        wait_for(lambda: _facts(db_url)["vacuum"]["held_s"] >= 1.0, 10, "the held time to grow")
        later = _facts(_as(db_url, RELAY_ROLE))["vacuum"]
        assert later["holder"] == str(pid) and later["held_s"] >= horizon["held_s"]

        settings = OpsSettings(alert_vacuum_held_s=1)
        facts = _facts(db_url)
        (finding,) = [f for f in evaluate(settings, facts) if f.rule == "vacuum_held_back"]
        assert f"session {pid}" in finding.summary
        assert "idle_in_transaction_session_timeout" in finding.summary
        assert finding.details["dead_tuples"]["outbox"] >= 500
        # under the threshold: quiet
        assert not [
            f
            for f in evaluate(OpsSettings(alert_vacuum_held_s=3600), facts)
            if f.rule == "vacuum_held_back"
        ]

        metrics.publish_facts(facts)
        assert metrics.vacuum_held_back._value.get() >= 1.0
        assert metrics.vacuum_held_back_xids._value.get() >= 1
        assert metrics.dead_tuples.labels("outbox")._value.get() >= 500
    finally:
        # the transactions end here and now (a closed connection's backend may linger)
        for session in (product, *reports):
            session.rollback()
            session.close()

    conn.execute("VACUUM pgpulse.outbox")
    assert _dead_outbox_rows(conn) == 0
    facts = _facts(db_url)
    assert facts["vacuum"] is None or facts["vacuum"]["holder"] != str(pid)
    assert not [
        f
        for f in evaluate(OpsSettings(alert_vacuum_held_s=1), facts)
        if f.rule == "vacuum_held_back"
    ]
    metrics.publish_facts(facts)
    assert metrics.dead_tuples.labels("outbox")._value.get() == 0


def test_a_read_only_idle_transaction_holds_nothing_back(conn, db_url, regions, roles):
    """READ COMMITTED, no write: no snapshot is kept between statements, vacuum may go on."""
    product = psycopg.connect(_as(db_url, PRODUCT_ROLE))
    try:
        product.execute("SELECT 1")
        # nothing else here holds a snapshot either (the reader leaves itself out)
        assert _facts(_as(db_url, RELAY_ROLE))["vacuum"] is None
    finally:
        product.close()


def test_the_relay_alerts_while_a_transaction_holds_vacuum_back_and_resolves_after(
    conn, db_url, regions, roles, relay_env, start_service, receiver
):
    env = relay_env | {
        "PGPULSE_ALERT_INTERVAL_S": "0.2",
        "PGPULSE_ALERT_WEBHOOK_URL": receiver.url,
        "PGPULSE_ALERT_VACUUM_HELD_S": "1",
        # the relay connects as its least-privileged role
        "DATABASE_URL": _as(db_url, RELAY_ROLE),
    }
    product = psycopg.connect(_as(db_url, PRODUCT_ROLE))
    try:
        product.execute("INSERT INTO public.orders VALUES (1)")
        pid = product.info.backend_pid
        start_service("relay", env=env)
        wait_for(lambda: receiver.of("vacuum_held_back", "firing"), 20, "the vacuum alert")
        alert = receiver.of("vacuum_held_back", "firing")[0]
        assert alert["details"]["holder"] == str(pid) and alert["details"]["kind"] == "session"
    finally:
        product.close()
    wait_for(lambda: receiver.of("vacuum_held_back", "resolved"), 20, "the vacuum alert to resolve")
