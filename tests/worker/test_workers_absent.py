"""Every worker of one region stopped, with real processes (`pgpulse worker` per region,
`pgpulse relay` with its alert rules, the real tick): the relay marks the region's workers
absent, its monitors are checked from the fallback region within 90 s and an alert fires;
when its workers return, its monitors come back within 90 s and the alert resolves. The time
constants are shrunk (PGPULSE_WORKERS_ABSENT_S=3) so it takes seconds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.cli import pgpulse
from tests.support.processes import Processes
from tests.support.seeding import connect, region_row, tick
from tests.support.waiting import wait_for
from tests.support.worker import WORKER_REGIONS, Workers, relay_env

EAST, WEST = WORKER_REGIONS[0], WORKER_REGIONS[1]
MONITORS = 6
WITHIN_S = 90  # the bound; here it takes seconds


@pytest.fixture
def ticking(db_url) -> Iterator[None]:
    """The real tick, every second (pg_cron's job, sped up)."""
    stop = threading.Event()

    def loop() -> None:
        with connect(db_url) as conn:
            while not stop.is_set():
                tick(conn)
                stop.wait(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def checked_from(conn, region: str, since: datetime) -> int:
    """Monitors with a result checked from `region` for a slot after `since`."""
    return conn.execute(
        "SELECT count(DISTINCT monitor_id) AS n FROM pgpulse.results_latest"
        " WHERE checked_from = %s AND region = %s AND scheduled_for > %s",
        (region, region, since),
    ).fetchone()["n"]


def test_a_region_without_workers_is_routed_around_and_back(
    conn, db_url, upstash62, targets, tmp_path, ticking
):
    name = conn.execute("SELECT current_database() AS d").fetchone()["d"]
    conn.execute(f'ALTER DATABASE "{name}" SET pgpulse.allow_private_targets = on')
    conn.execute("SET pgpulse.allow_private_targets = on")
    conn.execute(
        "INSERT INTO pgpulse.regions (code, is_default, fallback_region) "
        "VALUES (%s, true, NULL), (%s, false, %s)",
        (WEST.code, EAST.code, WEST.code),
    )
    conn.execute(
        "INSERT INTO public.monitors (url, check_interval_seconds, preferred_region,"
        " allow_fallback) SELECT %s || g, 10, %s, true FROM generate_series(1, %s) g",
        (targets.url("/ok?m"), EAST.code, MONITORS),
    )
    workers = Workers(upstash62.url, tmp_path)
    relays = Processes(tmp_path)
    quick = {"worker_idle_max_s": 0.3}
    try:
        east = workers.start(EAST, **quick)
        workers.start(WEST, **quick)
        relay = relays.start(
            "relay",
            env=relay_env(
                db_url,
                upstash62.url,
                workers_absent_s=3,
                depth_interval_s=0.2,
                alert_interval_s=0.2,
            ),
        )
        started = datetime.now(UTC)
        wait_for(
            lambda: checked_from(conn, EAST.code, started) == MONITORS,
            30,
            "every monitor checked from its own region",
            on_timeout=relays.tails,
        )
        assert not region_row(conn, EAST.code)["workers_absent"]

        # every worker of the region stops: its monitors go to the fallback region
        assert east.stop() == 0
        stopped = datetime.now(UTC)
        wait_for(
            lambda: checked_from(conn, WEST.code, stopped) == MONITORS,
            WITHIN_S,
            "the monitors checked from the fallback region",
            on_timeout=relays.tails,
        )
        moved_after = (datetime.now(UTC) - stopped).total_seconds()
        row = region_row(conn, EAST.code)
        assert row["workers_absent"] and row["workers_absent_since"] > stopped
        wait_for(lambda: relay.has_event("alert_firing", key=f"workers_absent:{EAST.code}"), 10)
        assert relay.has_event("workers_absent", region=EAST.code)
        status = pgpulse("status", "--json", env=relay_env(db_url, upstash62.url))
        (east_row,) = [r for r in json.loads(status.stdout)["regions"] if r["code"] == EAST.code]
        assert east_row["workers_absent"] is True

        # its workers return: so do its monitors, and the alert resolves
        workers.start(EAST, **quick)
        returned = datetime.now(UTC)
        wait_for(
            lambda: checked_from(conn, EAST.code, returned) == MONITORS,
            WITHIN_S,
            "the monitors back in their region",
            on_timeout=relays.tails,
        )
        back_after = (datetime.now(UTC) - returned).total_seconds()
        assert not region_row(conn, EAST.code)["workers_absent"]
        wait_for(lambda: relay.has_event("alert_resolved", key=f"workers_absent:{EAST.code}"), 10)
        assert relay.has_event("workers_returned", region=EAST.code)
        print(f"fallback after {moved_after:.1f} s, back after {back_after:.1f} s")
        assert relay.stop() == 0
    finally:
        relays.cleanup()
        workers.cleanup()
