"""A region whose workers are absent (the relay's verdict in pgpulse.regions) is loud on every
surface: doctor FAILs naming where its monitors go, the built-in alert fires, the metric is 1,
/readyz warns, the status page tags it and `pgpulse status` flags it; and the tick routes its
monitors that may fall back to the fallback region, the others stay (tests/worker has the
real processes: workers stopped and started again)."""

from __future__ import annotations

import asyncio
import json

import psycopg
from psycopg.rows import dict_row

from relay.config import OpsSettings
from relay.ops import metrics
from relay.ops.alerts import evaluate
from relay.ops.facts import read_facts
from relay.ops.http import judge_readiness
from relay.ops.snapshot import Snapshot
from relay.ops.statuspage import render
from tests.support.cli import pgpulse
from tests.support.seeding import add_monitors, tick


async def _facts(db_url: str) -> dict:
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as conn:
        return await read_facts(conn)


def outbox_regions(conn) -> dict[str, str]:
    return {
        str(r["monitor_id"]): r["region"]
        for r in conn.execute("SELECT DISTINCT monitor_id, region FROM pgpulse.outbox")
    }


def test_absent_workers_are_loud_everywhere_and_routed_around(conn, db_url, regions, relay_env):
    fallback = add_monitors(conn, 3, preferred_region="eu-west-1", allow_fallback=True)
    stays = add_monitors(conn, 2, preferred_region="eu-west-1", allow_fallback=False)
    conn.execute(
        "UPDATE pgpulse.regions SET workers_absent = true,"
        " workers_absent_since = now() - interval '42 seconds' WHERE code = 'eu-west-1'"
    )
    tick(conn)
    routed = outbox_regions(conn)
    assert {routed[str(m["id"])] for m in fallback} == {"us-east-1"}
    assert {routed[str(m["id"])] for m in stays} == {"eu-west-1"}  # they wait for workers

    doctor = pgpulse("doctor", "--json", env=relay_env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 1
    assert checks["workers eu-west-1"]["verdict"] == "FAIL"
    assert "workers absent for 4" in checks["workers eu-west-1"]["detail"]
    assert "fall back go to us-east-1" in checks["workers eu-west-1"]["detail"]
    assert checks["workers us-east-1"]["verdict"] == "ok"

    facts = asyncio.run(_facts(db_url))
    settings = OpsSettings()
    (alert,) = [f for f in evaluate(settings, facts) if f.rule == "workers_absent"]
    assert alert.key == "workers_absent:eu-west-1"
    assert "its monitors that may fall back go to us-east-1" in alert.summary
    metrics.publish_facts(facts)
    assert metrics.region_workers_absent.labels("eu-west-1")._value.get() == 1
    assert metrics.region_workers_absent.labels("us-east-1")._value.get() == 0
    snapshot = Snapshot(facts=facts, read_at=0, attempted_at=0, database_ok=True, error=None)
    status, ready = judge_readiness(snapshot, settings, delivering=None, now=1)
    assert status == 200  # the workers' trouble, not this instance's
    assert any(w.startswith("region eu-west-1: workers absent for 4") for w in ready["warnings"])
    page = render(snapshot, settings, now=1)
    assert "workers absent" in page and "workers_absent" in page and "All good" not in page
    human = pgpulse("status", env=relay_env).stdout
    assert "WORKERS-ABSENT" in next(line for line in human.splitlines() if "eu-west-1" in line)

    # the workers are back: quiet again, and the next slots go home
    conn.execute(
        "UPDATE pgpulse.regions SET workers_absent = false, workers_absent_since = NULL"
        " WHERE code = 'eu-west-1'"
    )
    facts = asyncio.run(_facts(db_url))
    assert not [f for f in evaluate(settings, facts) if f.rule == "workers_absent"]
    conn.execute("DELETE FROM pgpulse.outbox")
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    tick(conn)
    assert set(outbox_regions(conn).values()) == {"eu-west-1"}
