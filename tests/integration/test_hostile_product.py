"""A product's monitors table as real products have it: row-level security with a
restrictive per-team policy, an audit trigger writing a table pgpulse may not touch, an
updated_at trigger and a row-counting "CDC" trigger. pg_cron's own job, as its own role,
schedules every active monitor; the product's rows are never written by a tick (their xmin
stays); product writes pgpulse cannot schedule succeed and are parked; a product trigger
fired through pgpulse never runs as a superuser. Waits for pg_cron's next minute (<= 75 s)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.dsn import as_user
from tests.support.waiting import wait_for

REGION = "hostile-1"  # this test's own rows in the shared cron database
TEAM = "team-hostile"

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

UNDO = """
DROP POLICY IF EXISTS team_rows ON public.monitors;
DROP POLICY IF EXISTS team_only ON public.monitors;
ALTER TABLE public.monitors NO FORCE ROW LEVEL SECURITY;
ALTER TABLE public.monitors DISABLE ROW LEVEL SECURITY;
DROP TRIGGER IF EXISTS audit ON public.monitors;
DROP TRIGGER IF EXISTS touch ON public.monitors;
DROP TRIGGER IF EXISTS cdc ON public.monitors;
DELETE FROM public.monitors WHERE preferred_region = '{region}';
DROP FUNCTION IF EXISTS public.audit_monitor(), public.touch_monitor(), public.cdc_monitor();
DROP TABLE IF EXISTS public.monitor_audit, public.cdc_events;
ALTER TABLE public.monitors DROP COLUMN IF EXISTS team, DROP COLUMN IF EXISTS updated_at;
DELETE FROM pgpulse.outbox WHERE region = '{region}';
DELETE FROM pgpulse.regions WHERE code = '{region}';
DO $$ BEGIN
    IF to_regrole('shop_app') IS NOT NULL THEN DROP OWNED BY shop_app; DROP ROLE shop_app; END IF;
END $$;
"""


@pytest.fixture
def product(cron_db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(cron_db_url, autocommit=True, row_factory=dict_row) as admin:
        admin.execute(UNDO.format(team=TEAM, region=REGION))
        admin.execute(PRODUCT)
        admin.execute("INSERT INTO pgpulse.regions (code) VALUES (%s)", (REGION,))
        try:
            yield admin
        finally:
            admin.execute(UNDO.format(team=TEAM, region=REGION))


def test_a_hostile_product_table_is_scheduled_by_pg_cron_and_never_written(product, cron_db_url):
    shop = as_user(cron_db_url, "shop_app")
    team = {"options": f"-c app.team={TEAM}"}
    with psycopg.connect(shop, autocommit=True, row_factory=dict_row, **team) as app:
        # the product's own role writes its monitors as always: no right on pgpulse needed
        app.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, preferred_region,"
            " allow_fallback) SELECT 'https://shop.example/' || g, 1, %s, false"
            " FROM generate_series(1, 40) g",
            (REGION,),
        )
        # writes pgpulse would have refused: they succeed, and are parked
        app.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, is_active, preferred_region)"
            " VALUES ('https://zero.example/', 0, false, %s),"
            " ('https://long.example/', 2880, true, %s), ('http://10.1.2.3/', 1, true, %s)",
            (REGION, REGION, REGION),
        )
        app.execute(
            "INSERT INTO public.monitors (url, criticality, preferred_region)"
            " VALUES ('https://q.example/', 'high\"', %s)",
            (REGION,),
        )
        ids = [r["id"] for r in app.execute("SELECT id FROM public.monitors ORDER BY url")]
        assert len(ids) == 44  # the product sees its own rows through its policy
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

    # due now; what the product's rows are, byte for byte (xmin: no write reaches them)
    product.execute(
        "UPDATE pgpulse.schedule s SET next_check_at = now() - interval '1 second'"
        " FROM public.monitors m WHERE m.id = s.monitor_id AND m.team = %s",
        (TEAM,),
    )
    before = product.execute(
        "SELECT id, xmin::text AS xmin FROM public.monitors WHERE team = %s ORDER BY id", (TEAM,)
    ).fetchall()
    audited = product.execute("SELECT count(*) AS n FROM public.monitor_audit").fetchone()["n"]
    events = product.execute("SELECT count(*) AS n FROM public.cdc_events").fetchone()["n"]
    since = product.execute("SELECT now() AS t").fetchone()["t"]
    jobid = product.execute(
        "SELECT jobid, username FROM cron.job WHERE jobname = 'pgpulse-tick'"
    ).fetchone()
    assert jobid["username"] == "pgpulse_ticker"

    def finished_run():
        return product.execute(
            "SELECT status, return_message FROM cron.job_run_details"
            " WHERE jobid = %s AND start_time >= %s AND status IN ('succeeded', 'failed')"
            " ORDER BY start_time LIMIT 1",
            (jobid["jobid"], since),
        ).fetchone()

    run = wait_for(finished_run, 75, "pg_cron to run pgpulse-tick")
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
        == before
    )
    assert product.execute("SELECT count(*) AS n FROM public.monitor_audit").fetchone()["n"] == (
        audited
    )
    assert product.execute("SELECT count(*) AS n FROM public.cdc_events").fetchone()["n"] == events
    # what the product sees of its schedule, through its own policy
    with psycopg.connect(shop, autocommit=True, row_factory=dict_row, **team) as app:
        seen = app.execute(
            "SELECT count(*) FILTER (WHERE last_scheduled_at IS NOT NULL) AS scheduled,"
            " count(*) FILTER (WHERE parked IS NOT NULL) AS parked"
            " FROM pgpulse.monitor_schedule"
        ).fetchone()
    assert seen == {"scheduled": 40, "parked": 4}
