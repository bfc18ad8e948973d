"""Issue 26 finding 6: a `pgpulse relay` or `pgpulse http` started while the database is down
keeps running, reports the outage through the alert webhook within
PGPULSE_ALERT_DATABASE_DOWN_S, and works normally once the database is back."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from relay import migrate
from relay.local.embedded import EmbeddedPostgres
from tests.support.queues import Queues
from tests.support.seeding import add_regions, insert_jobs
from tests.support.waiting import wait_for

DOWN_S = 3


def ready(process) -> bool:
    return httpx.get(f"{process.url}/readyz", timeout=5).json()["ready"]


@pytest.mark.timeout(180)
def test_started_into_an_outage_alerts_then_recovers(
    relay_env, receiver, start_service, redis_server
):
    with EmbeddedPostgres(fast=True) as pg:
        dsn = pg.dsn()
        migrate.upgrade(dsn)
        with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as setup:
            add_regions(setup, "us-east-1", {"eu-west-1": "us-east-1"})
            jobs = set(insert_jobs(setup, 10, "us-east-1", tag="outage-first"))
        pg.stop_postmaster("fast")
        env = relay_env | {
            "DATABASE_URL": dsn,
            "PGPULSE_ALERT_WEBHOOK_URL": receiver.url,
            "PGPULSE_ALERT_DATABASE_DOWN_S": str(DOWN_S),
            "PGPULSE_ALERT_INTERVAL_S": "0.2",
            "PGPULSE_FACTS_INTERVAL_S": "0.2",
            "PGPULSE_ALERT_DEADMAN_S": "3600",
        }
        http = start_service("http", env=env)
        relay = start_service("relay", env=env)

        def both_alerted() -> bool:  # (each logs it, then posts it)
            return len(receiver.of("database_unreachable", "firing")) == 2 and all(
                p.has_event("alert_firing", alert="database_unreachable") for p in (http, relay)
            )

        wait_for(both_alerted, DOWN_S + 30, "each process's database alert", on_timeout=relay.tail)
        firing = receiver.of("database_unreachable", "firing")
        assert all(a["details"]["down_s"] >= DOWN_S for a in firing)
        assert relay.running() and http.running()
        assert relay.has_event("relay_waiting_for_database")
        assert not ready(http) and not ready(relay)

        pg.start_postmaster()
        queues = Queues(redis_server.url)
        try:
            wait_for(
                lambda: jobs <= queues.counts_by_job().keys(),
                60,
                "the relay to deliver once the database is up",
                on_timeout=relay.tail,
            )
            assert {queues.counts_by_job()[job_id] for job_id in jobs} == {1}
        finally:
            queues.close()
        assert relay.has_event("relay_database_reachable")
        wait_for(lambda: ready(http) and ready(relay), 30, "both ready")
        wait_for(
            lambda: len(receiver.of("database_unreachable", "resolved")) == 2,
            30,
            "each process's resolve",
        )
        assert relay.stop() == 0
