"""Monitors that are due and not scheduled are loud on every surface: a tick that ran but
took none of many due monitors (their schedule rows held by another transaction), and rows
parked for what pgpulse cannot schedule. doctor FAILs or warns, the built-in alerts fire,
the metrics say how many, /readyz warns and the status page shows the alerts."""

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
from tests.support.seeding import add_monitors, follow_logged, tick


async def _facts(db_url: str) -> dict:
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as conn:
        return await read_facts(conn)


def _checks(out: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_monitors_a_tick_did_not_take_are_loud_everywhere(conn, db_url, regions, relay_env):
    monitors = add_monitors(conn, 30, due="-5 minutes", check_interval_minutes=5)
    held = psycopg.connect(db_url)
    try:
        # another transaction holds every one of their schedule rows: the tick skips them
        held.execute(
            "SELECT 1 FROM pgpulse.schedule WHERE monitor_id = ANY (%s) FOR UPDATE",
            ([m["id"] for m in monitors],),
        )
        run = tick(conn)
        assert run["monitors_claimed"] == 0 and run["stop_reason"] == "drained"

        doctor = pgpulse("doctor", "--json", env=relay_env)
        assert doctor.returncode == 1
        check = _checks(doctor.stdout)["scheduling"]
        assert check["verdict"] == "FAIL"
        assert "30 active monitors overdue" in check["detail"]

        facts = asyncio.run(_facts(db_url))
        assert facts["schedule"]["overdue"] == 30
        settings = OpsSettings()
        rules = {f.rule: f for f in evaluate(settings, facts)}
        assert "30 active monitors are overdue" in rules["monitors_overdue"].summary

        metrics.publish_facts(facts)
        assert metrics.monitors_overdue._value.get() == 30

        snapshot = Snapshot(facts=facts, read_at=0, attempted_at=0, database_ok=True, error=None)
        _, ready = judge_readiness(snapshot, settings, delivering=None, now=1)
        assert any("30 active monitors overdue" in w for w in ready["warnings"])
        page = render(snapshot, settings, now=1)
        assert "monitors_overdue" in page and "All good" not in page
    finally:
        held.rollback()  # at once: a close() alone lets the server release the rows later
        held.close()

    # once the rows are free, the next tick takes them and every surface is quiet again
    assert tick(conn)["monitors_claimed"] == 30
    facts = asyncio.run(_facts(db_url))
    assert facts["schedule"]["overdue"] == 0
    assert not [f for f in evaluate(OpsSettings(), facts) if f.rule == "monitors_overdue"]


def test_parked_monitors_are_named_by_doctor_the_alerts_and_the_metrics(
    conn, db_url, regions, relay_env
):
    conn.execute(
        "INSERT INTO public.monitors (url, check_interval_minutes) VALUES"
        " ('http://169.254.169.254/latest/meta-data/', 1), ('https://fine.example/', 0)"
    )
    conn.execute(
        "INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms)"
        " VALUES ('test', now() - interval '2 s', now(), 45000, 60000)"
    )
    doctor = pgpulse("doctor", "--json", env=relay_env)
    check = _checks(doctor.stdout)["scheduling"]
    assert check["verdict"] == "warn", check
    assert "2 active monitors parked" in check["detail"]

    facts = asyncio.run(_facts(db_url))
    rules = {f.rule: f for f in evaluate(OpsSettings(), facts)}
    assert rules["monitors_parked"].details["parked"] == 2
    metrics.publish_facts(facts)
    assert metrics.monitors_parked._value.get() == 2


def test_following_that_stopped_is_found_and_resync_repairs_it(conn, db_url, regions, relay_env):
    add_monitors(conn, 10, due="+1 minute")
    conn.execute(
        "INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms)"
        " VALUES ('test', now() - interval '2 s', now(), 45000, 60000)"
    )
    # a bulk load with triggers off, then writes as logical replication applies them
    conn.execute("ALTER TABLE public.monitors DISABLE TRIGGER pgpulse_follow_insert")
    conn.execute(
        "INSERT INTO public.monitors (url) SELECT 'https://loaded.example/' || g"
        " FROM generate_series(1, 4) g"
    )
    facts = asyncio.run(_facts(db_url))
    rules = {f.rule: f for f in evaluate(OpsSettings(), facts)}
    assert "pgpulse_follow_insert disabled" in rules["not_following"].summary
    metrics.publish_facts(facts)
    assert metrics.following._value.get() == 0
    conn.execute("ALTER TABLE public.monitors ENABLE TRIGGER pgpulse_follow_insert")
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE public.monitors SET criticality = 'high' WHERE url LIKE '%/1'")
        conn.execute("DELETE FROM public.monitors WHERE url LIKE '%/2'")

    doctor = pgpulse("doctor", "--json", env=relay_env)
    check = _checks(doctor.stdout)["scheduling"]
    assert check["verdict"] == "FAIL"
    assert "3 missing, 1 orphaned, 1 differing" in check["detail"], check

    dry = pgpulse("resync", "--dry-run", env=relay_env)
    assert dry.returncode == 0, dry.stderr
    assert "would repair 3 missing, 1 orphaned, 1 differing" in dry.stdout
    done = pgpulse("resync", "--json", env=relay_env)
    assert json.loads(done.stdout)["missing"] == 3
    again = pgpulse("resync", env=relay_env)
    assert "in step" in again.stdout
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM pgpulse.schedule s JOIN public.monitors m"
            " ON m.id = s.monitor_id WHERE s.criticality = m.criticality"
        ).fetchone()["n"]
        == 12
    )
    facts = asyncio.run(_facts(db_url))
    assert not [f for f in evaluate(OpsSettings(), facts) if f.rule == "not_following"]


def test_resync_refuses_when_row_level_security_hides_rows(conn, db_url, relay_env):
    conn.execute("ALTER TABLE public.monitors ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ops_app') "
        "THEN CREATE ROLE ops_app LOGIN; END IF; END $$"
    )
    conn.execute("GRANT SELECT ON public.monitors TO ops_app")
    conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.schedule TO ops_app")
    try:
        refused = pgpulse(
            "resync", env=relay_env | {"DATABASE_URL": db_url.replace("postgres@", "ops_app@")}
        )
        assert refused.returncode != 0
        assert "row-level security on public.monitors may hide rows" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    finally:
        conn.execute("ALTER TABLE public.monitors DISABLE ROW LEVEL SECURITY")


def test_a_publication_of_every_table_keeps_the_tick_working_and_doctor_says_so(
    conn, db_url, regions, relay_env
):
    """Debezium's default is a FOR ALL TABLES publication: an UPDATE or DELETE on a table
    without a replica identity then fails. Every pgpulse table has one, so the tick (which
    updates the schedule and deletes folded skips) goes on; doctor warns about the churn."""
    conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    try:
        conn.execute(
            "INSERT INTO pgpulse.maintenance_windows (time_zone, starts_local, ends_local)"
            " VALUES ('UTC', now() - interval '1 hour', now() + interval '1 hour')"
        )
        add_monitors(conn, 5, due="-1 second")
        run = tick(conn)
        assert run["stop_reason"] == "drained" and run["skipped"] == 0, run["skip_detail"]
        assert run["maintenance_skipped"] >= 5
        assert (
            conn.execute("SELECT count(*) AS n FROM pgpulse.maintenance_skips").fetchone()["n"] == 0
        )  # folded, deleted under the publication
        missing = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pgpulse' AND c.relkind = 'r' AND c.relreplident = 'd'"
            " AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid"
            "                  AND i.indisprimary)"
        ).fetchall()
        assert missing == []
        check = _checks(pgpulse("doctor", "--json", env=relay_env).stdout)["scheduling"]
        assert "publication(s) everything" in check["detail"]
    finally:
        conn.execute("DROP PUBLICATION everything")


def test_rows_nobody_follows_are_loud(conn, db_url, regions, relay_env):
    conn.execute(
        "INSERT INTO public.monitors (url) SELECT 'https://bulk.example/' || g"
        " FROM generate_series(1, 600) g"
    )
    # no relay ran and no tick: ten minutes later they are still only logged
    conn.execute("UPDATE pgpulse.follow_log SET logged_at = now() - interval '10 minutes'")

    found = {f.rule: f for f in evaluate(OpsSettings(), asyncio.run(_facts(db_url)))}
    assert (
        "600 product rows of bulk writes not followed" in found["bulk_writes_not_followed"].summary
    )
    doctor = pgpulse("doctor", env=relay_env)
    assert doctor.returncode == 1
    assert "600 product rows of bulk writes not followed" in doctor.stdout

    follow_logged(conn)
    found = {f.rule for f in evaluate(OpsSettings(), asyncio.run(_facts(db_url)))}
    assert "bulk_writes_not_followed" not in found
