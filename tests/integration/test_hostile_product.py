"""A product's monitors table as real products have it: row-level security with a
restrictive per-team policy, an audit trigger writing a table pgpulse may not touch, an
updated_at trigger and a row-counting "CDC" trigger. pg_cron's own job, as its own role,
schedules every active monitor; the product's rows are never written by a tick (their xmin
stays); product writes pgpulse cannot schedule succeed and are parked; a product trigger
fired through pgpulse never runs as a superuser. Waits for pg_cron's next minute (shared:
tests/support/cron_minute.py)."""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.cron_minute import Scenario
from tests.support.dsn import as_user
from tests.support.waiting import wait_for

REGION = "hostile-1"  # this test's own rows in the shared cron database
TEAM = "team-hostile"
TEAM_ON = {"options": f"-c app.team={TEAM}"}  # the product's session setting for its policy

PRODUCT = f"""
ALTER TABLE public.monitors ADD COLUMN team text NOT NULL DEFAULT '{TEAM}';
ALTER TABLE public.monitors ADD COLUMN updated_at timestamptz;
CREATE TABLE public.monitor_audit (op text, id text, at timestamptz DEFAULT now(),
                                   writer text DEFAULT current_user);
CREATE TABLE public.cdc_events (n bigint);
CREATE FUNCTION public.audit_monitor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.monitor_audit (op, id) VALUES (TG_OP, coalesce(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;
CREATE FUNCTION public.touch_monitor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$;
CREATE FUNCTION public.cdc_monitor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.cdc_events VALUES (1); RETURN NULL; END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION public.audit_monitor();
CREATE TRIGGER touch BEFORE UPDATE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION public.touch_monitor();
CREATE TRIGGER cdc AFTER INSERT OR UPDATE OR DELETE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION public.cdc_monitor();
ALTER TABLE public.monitors ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.monitors FORCE ROW LEVEL SECURITY;
CREATE POLICY team_rows ON public.monitors
    USING (team = current_setting('app.team', true))
    WITH CHECK (team = current_setting('app.team', true));
CREATE POLICY team_only ON public.monitors AS RESTRICTIVE
    USING (team = current_setting('app.team', true));
CREATE ROLE shop_app LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.monitors, public.monitor_audit TO shop_app;
GRANT INSERT ON public.cdc_events TO shop_app;
"""


class HostileProduct(Scenario):
    """The product's database (a migrated clone) with PRODUCT applied and its rows written
    by its own role; pg_cron's tick job, as the migration made it in the cron database,
    scheduled for it with cron.schedule_in_database (the cron database's own tick job is
    another test's)."""

    def arrange(self) -> None:
        pg = self.request.getfixturevalue("pg_server")
        template = self.request.getfixturevalue("template_db")
        cron_db_url = self.request.getfixturevalue("cron_db_url")
        name = f"hostile{os.getpid()}"
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        self.resources.callback(drop_database_and_role, pg.dsn("postgres"), name)
        self.db_url = pg.dsn(name)
        self.product = self.resources.enter_context(
            psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row)
        )
        self.product.execute(PRODUCT)
        self.product.execute("INSERT INTO pgpulse.regions (code) VALUES (%s)", (REGION,))
        self.app_writes()
        # due now; what the product's rows are, byte for byte (xmin: no write reaches them)
        self.product.execute(
            "UPDATE pgpulse.schedule s SET next_check_at = now() - interval '1 second'"
            " FROM public.monitors m WHERE m.id = s.monitor_id AND m.team = %s",
            (TEAM,),
        )
        self.before = self.product.execute(
            "SELECT id, xmin::text AS xmin FROM public.monitors WHERE team = %s ORDER BY id",
            (TEAM,),
        ).fetchall()
        self.audited = self.count("public.monitor_audit")
        self.events = self.count("public.cdc_events")
        self.since = self.product.execute("SELECT now() AS t").fetchone()["t"]
        self.cron = self.resources.enter_context(
            psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row)
        )
        self.migrations_job = self.cron.execute(
            "SELECT command, username FROM cron.job WHERE jobname = 'pgpulse-tick'"
            " AND database = current_database()"
        ).fetchone()
        self.jobid = self.cron.execute(
            "SELECT cron.schedule_in_database('pgpulse-tick-hostile', '* * * * *', %s, %s,"
            " username => %s) AS jobid",
            (self.migrations_job["command"], name, self.migrations_job["username"]),
        ).fetchone()["jobid"]
        self.resources.callback(self.cron.execute, "SELECT cron.unschedule(%s)", (self.jobid,))

    def app_writes(self) -> None:
        """The product's own role writes its monitors as always: no right on pgpulse."""
        with psycopg.connect(
            self.shop_url, autocommit=True, row_factory=dict_row, **TEAM_ON
        ) as app:
            app.execute(
                "INSERT INTO public.monitors (url, check_interval_minutes, preferred_region,"
                " allow_fallback) SELECT 'https://shop.example/' || g, 1, %s, false"
                " FROM generate_series(1, 40) g",
                (REGION,),
            )
            # writes pgpulse would have refused: they succeed, and are parked
            app.execute(
                "INSERT INTO public.monitors (url, check_interval_minutes, is_active,"
                " preferred_region) VALUES ('https://zero.example/', 0, false, %s),"
                " ('https://long.example/', 2880, true, %s), ('http://10.1.2.3/', 1, true, %s)",
                (REGION, REGION, REGION),
            )
            app.execute(
                "INSERT INTO public.monitors (url, criticality, preferred_region)"
                " VALUES ('https://q.example/', 'high\"', %s)",
                (REGION,),
            )
            self.ids = [r["id"] for r in app.execute("SELECT id FROM public.monitors ORDER BY url")]

    @property
    def shop_url(self) -> str:
        return as_user(self.db_url, "shop_app")

    def count(self, table: str) -> int:
        return self.product.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def drop_database_and_role(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS shop_app")


@pytest.mark.slow
@pytest.mark.cron_minute(scenario=HostileProduct)
def test_a_hostile_product_table_is_scheduled_by_pg_cron_and_never_written(cron_minute):
    product, since = cron_minute.product, cron_minute.since
    assert len(cron_minute.ids) == 44  # the product sees its own rows through its policy
    parked = {
        r["url"]: r["parked"]
        for r in product.execute(
            "SELECT m.url, s.parked FROM pgpulse.schedule s JOIN public.monitors m"
            " ON m.id = s.monitor_id WHERE m.team = %s AND s.parked IS NOT NULL",
            (TEAM,),
        )
    }
    assert parked.keys() == {
        "https://zero.example/",
        "https://long.example/",
        "http://10.1.2.3/",
        "https://q.example/",
    }
    assert parked["https://long.example/"].startswith("interval: 172800 s")
    assert parked["http://10.1.2.3/"].startswith("url: ")
    assert parked["https://q.example/"].startswith("criticality: ")
    # the tick's job runs as the migration made it: as pgpulse_ticker
    assert cron_minute.migrations_job["username"] == "pgpulse_ticker"

    def finished_run():
        return cron_minute.cron.execute(
            "SELECT status, return_message FROM cron.job_run_details"
            " WHERE jobid = %s AND start_time >= %s AND status IN ('succeeded', 'failed')"
            " ORDER BY start_time LIMIT 1",
            (cron_minute.jobid, since),
        ).fetchone()

    # a job scheduled just before a minute boundary may have to wait for the next one
    run = wait_for(finished_run, cron_minute.left(135), "pg_cron to run pgpulse-tick")
    assert run["status"] == "succeeded", run["return_message"]

    # every active, schedulable monitor got its job; none of the parked ones did
    jobs = product.execute(
        "SELECT o.monitor_id, count(*) AS n FROM pgpulse.outbox o JOIN public.monitors m"
        " ON m.id = o.monitor_id WHERE m.team = %s GROUP BY o.monitor_id",
        (TEAM,),
    ).fetchall()
    assert len(jobs) == 40
    tick_run = product.execute(
        "SELECT skipped, skip_detail FROM pgpulse.tick_runs WHERE trigger = 'pg_cron'"
        " AND started_at >= %s ORDER BY id LIMIT 1",
        (since,),
    ).fetchone()
    assert tick_run["skipped"] == 0, tick_run["skip_detail"]
    # the product's table was not written: same row versions, no audit, no CDC event
    assert (
        product.execute(
            "SELECT id, xmin::text AS xmin FROM public.monitors WHERE team = %s ORDER BY id",
            (TEAM,),
        ).fetchall()
        == cron_minute.before
    )
    assert cron_minute.count("public.monitor_audit") == cron_minute.audited
    assert cron_minute.count("public.cdc_events") == cron_minute.events
    # what the product sees of its schedule, through its own policy
    with psycopg.connect(
        cron_minute.shop_url, autocommit=True, row_factory=dict_row, **TEAM_ON
    ) as app:
        seen = app.execute(
            "SELECT count(*) FILTER (WHERE last_scheduled_at IS NOT NULL) AS scheduled,"
            " count(*) FILTER (WHERE parked IS NOT NULL) AS parked"
            " FROM pgpulse.monitor_schedule"
        ).fetchone()
    assert seen == {"scheduled": 40, "parked": 4}
