"""Alembic migrations: they build exactly the schema in sql/, go down to nothing and up
again, install the pg_cron jobs where pg_cron runs and warn where it does not."""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from relay import migrate
from relay.errors import DowngradeDropsData
from relay.local.embedded import EmbeddedPostgres
from relay.queries import queries
from relay.resources import schema_sql
from tests.support.catalog import catalog, cron_job_rows, differences
from tests.support.cli import ROOT, pgpulse

HEAD = "0.2.0"
LAST_RELEASE = "0016"  # the last revision before the unreleased one
_names = itertools.count()


def schema_dump(server: EmbeddedPostgres, dsn: str) -> str:
    proc = subprocess.run(
        [
            str(server.bindir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--exclude-table=pgpulse.alembic_version",
            "--dbname",
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # newer pg_dump guards its output with a random \restrict key: not schema
    return "\n".join(
        line
        for line in proc.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def same_schema(server: EmbeddedPostgres, dsn: str, reference: str) -> bool:
    """dsn's schema is reference's, as pg_dump writes it. One thing a downgrade cannot give
    back is where a column it re-adds to the product's table stands among the others (0.2.0
    removed check_spec): that would rewrite the product's table, so the order of
    public.monitors' columns is not compared."""

    def columns_in_any_order(dump: str) -> str:
        start = dump.index("CREATE TABLE public.monitors (\n")
        end = dump.index("\n);", start)
        head, body = dump[:start], dump[start:end].splitlines()
        lines = sorted(line.rstrip(",") for line in body[1:])
        return head + "\n".join([body[0], *lines]) + dump[end:]

    assert columns_in_any_order(schema_dump(server, dsn)) == columns_in_any_order(
        schema_dump(server, reference)
    )
    return True


def objects(dsn: str) -> dict:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute("""
            SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgpulse') AS schemas,
                   (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname IN ('public', 'pgpulse') AND c.relkind = 'r'
                       AND c.relname <> 'alembic_version') AS tables,
                   (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'pgpulse') AS routines,
                   to_regclass('pgpulse.alembic_version') IS NOT NULL AS has_version_table
        """).fetchone()


def version(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT version_num FROM pgpulse.alembic_version").fetchone()
    return row[0] if row else None


def cron_jobs(dsn: str) -> dict[str, str]:
    """pgpulse's pg_cron jobs for this database (none where pg_cron is not, or no longer)."""
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('cron.job') IS NULL").fetchone()[0]:
            return {}
        return dict(
            conn.execute(
                "SELECT jobname, schedule FROM cron.job WHERE database = current_database() "
                "AND jobname LIKE 'pgpulse-%' ORDER BY jobname"
            ).fetchall()
        )


def test_migrated_database_is_the_one_sql_builds(empty_db, capsys):
    """Object by object from the catalog: tables, columns, constraints, indexes, triggers,
    functions' definitions, types, grants (tests/migrations/catalog.py)."""
    migrated, straight = empty_db(), empty_db()
    migrate.upgrade(migrated)
    with psycopg.connect(straight) as conn:
        conn.execute(schema_sql())
        for name in ("roles.sql", "cron.sql"):
            conn.execute((ROOT / "sql" / name).read_text())
    with psycopg.connect(migrated) as a, psycopg.connect(straight) as b:
        built, expected = catalog(a), catalog(b)
    assert "pgpulse.tick(bigint,text,interval,interval,integer)" in built["functions"]
    assert "pgpulse.outbox" in built["relations"] and built["triggers"] and built["indexes"]
    assert differences(built, expected) == []


def test_migrated_cron_jobs_are_the_ones_sql_cron_makes(cron_db_url):
    with psycopg.connect(cron_db_url, autocommit=True) as conn:
        migrated = cron_job_rows(conn)
        conn.execute((ROOT / "sql" / "cron.sql").read_text())
        assert cron_job_rows(conn) == migrated
    assert set(migrated) == {"pgpulse-tick", "pgpulse-prune"}


def test_the_catalog_comparison_sees_each_kind_of_difference(db_url):
    """Each change below, made in a transaction that is rolled back, is named."""
    with psycopg.connect(db_url) as conn:
        base = catalog(conn)
        index = next(
            k
            for k, v in base["indexes"].items()
            if k.startswith("pgpulse.") and "UNIQUE" not in v["definition"]
        )
        trigger = next(iter(base["triggers"]))
        table, _, name = trigger.rpartition(".")
        changes = {
            "REVOKE SELECT ON pgpulse.outbox FROM pgpulse_relay": "relations pgpulse.outbox: acl",
            "ALTER FUNCTION pgpulse._unrouted(timestamptz, jsonb, integer) VOLATILE": "functions pgpulse._unrouted(timestamp with time zone,jsonb,integer): definition",
            f"DROP INDEX {index}": f"indexes {index}: only in the first",
            f"ALTER TABLE {table} DISABLE TRIGGER {name}": f"triggers {trigger}: enabled",
            "ALTER TABLE pgpulse.tick_runs ALTER COLUMN trigger SET DEFAULT 'x'": "columns pgpulse.tick_runs.trigger: default",
            "ALTER TABLE pgpulse.regions ADD CONSTRAINT short_code CHECK (length(code) < 64)": "constraints pgpulse.regions.short_code: only in the second",
        }
        for change, named in changes.items():
            conn.execute(change)
            found = differences(base, catalog(conn))
            conn.rollback()
            assert any(line.startswith(named) for line in found), (change, found)


def test_upgrade_downgrade_to_base_and_upgrade_again(pg_server, empty_db, capsys):
    dsn = empty_db()
    migrate.upgrade(dsn)
    assert version(dsn) == HEAD
    first = schema_dump(pg_server, dsn)
    assert objects(dsn) == {"schemas": 1, "tables": 14, "routines": 50, "has_version_table": True}

    migrate.downgrade(dsn, "base")
    assert version(dsn) is None
    # only Alembic's (empty) version table is left, in schema pgpulse
    assert objects(dsn) == {"schemas": 1, "tables": 0, "routines": 0, "has_version_table": True}

    migrate.upgrade(dsn)
    assert version(dsn) == HEAD
    assert schema_dump(pg_server, dsn) == first
    # and the schema works: a tick runs in it
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CALL pgpulse.tick(p_trigger => 'migration-test')")


def test_migrating_without_pg_cron_succeeds_and_says_how_to_tick(empty_db, cron_db_url, capsys):
    dsn = empty_db()
    migrate.upgrade(dsn)
    err = capsys.readouterr().err
    assert "pgpulse: pg_cron is not available in database" in err
    assert "pgpulse tick" in err
    assert "cron.database_name" in err
    assert version(dsn) == HEAD
    # nothing was scheduled for it in the cron database either
    with psycopg.connect(cron_db_url) as conn:
        name = dsn.rsplit("/", 1)[1]
        assert (
            conn.execute("SELECT count(*) FROM cron.job WHERE database = %s", (name,)).fetchone()[0]
            == 0
        )


def test_a_role_that_is_not_superuser_can_migrate_and_is_told_about_pg_cron(pg_server, capsys):
    """A managed database's owner may not read shared_preload_libraries or use pg_cron:
    the migration still succeeds, and warns."""
    role = f"owner{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    dsn = f"postgresql://{role}@127.0.0.1:{pg_server.port}/{role}"
    try:
        migrate.upgrade(dsn)
        err = capsys.readouterr().err
        assert f'pgpulse: role "{role}" may not set up pg_cron' in err
        assert "pgpulse tick" in err
        assert version(dsn) == HEAD
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CALL pgpulse.tick(p_trigger => 'owner-test')")
        migrate.downgrade(dsn, "base", force=True)  # the tick's run record goes too
        assert objects(dsn)["tables"] == 0
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_pg_cron_jobs_follow_upgrade_and_downgrade_in_the_cron_database(cron_db_url):
    expected = {"pgpulse-prune": "17 3 * * *", "pgpulse-tick": "* * * * *"}
    assert cron_jobs(cron_db_url) == expected
    try:
        # (pg_cron's ticks of the shared cron database leave run records: --force)
        migrate.downgrade(cron_db_url, "base", force=True)
        assert cron_jobs(cron_db_url) == {}
        assert objects(cron_db_url)["tables"] == 0
    finally:
        migrate.upgrade(cron_db_url)
    assert cron_jobs(cron_db_url) == expected
    # installing the jobs again (as a re-run of sql/cron.sql) does not duplicate them
    with psycopg.connect(cron_db_url) as conn:
        conn.execute((ROOT / "sql" / "cron.sql").read_text())
    with psycopg.connect(cron_db_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE 'pgpulse-%'").fetchone()[
                0
            ]
            == 2
        )


# ------------------------------------------------------------ existing installs upgrade

HOST_REVISION = "1f2e3d4c5b6a"  # a host application's own Alembic head


def install_0001_as_released(dsn: str) -> None:
    """A database as pgpulse 0.1.0 left it: the released 0001 SQL, its version row in
    public.alembic_version (Alembic's own layout), beside a host application's row."""
    with psycopg.connect(dsn) as conn:
        conn.execute((ROOT / "migrations" / "sql" / "0001_initial.sql").read_text())
        conn.execute(
            "CREATE TABLE public.alembic_version (version_num varchar(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute("INSERT INTO public.alembic_version VALUES ('0001'), (%s)", (HOST_REVISION,))


def populate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO regions (code, is_default) VALUES ('us-east-1', true);
            INSERT INTO regions (code, fallback_region, weight) VALUES
                ('eu-west-1', 'us-east-1', 2), ('ap-south-1', 'eu-west-1', 1);
            INSERT INTO public.monitors (url, check_interval_minutes, preferred_region, next_check_at)
            SELECT 'https://example.com/' || g, 1 + g % 5,
                   (ARRAY['us-east-1', 'eu-west-1', NULL])[1 + g % 3],
                   now() - interval '1 minute' + g * interval '1 second'
              FROM generate_series(1, 300) g""")
        conn.execute("CALL pgpulse.tick(p_trigger => 'before-upgrade')")
        conn.execute("""
            INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality, scheduled_for,
                   deliver_at, expires_at, payload, attempts, last_error)
            SELECT job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                   payload, 5, 'ERR gave up'
              FROM pgpulse.outbox ORDER BY job_id LIMIT 7""")


# public.monitors as revision 0001 made it; later revisions add columns after these
MONITOR_COLUMNS_0001 = (
    "id, url, method, timeout_ms, expected_status, check_retries, "
    "check_retry_delay_ms, check_interval_minutes, is_active, preferred_region, "
    "allow_fallback, criticality, next_check_at, last_scheduled_at, "
    "created_at"  # (and check_spec, derived, which pgpulse's schedule holds since 0.2.0)
)

TICK_RUN_COLUMNS_0001 = (
    "id, trigger, started_at, finished_at, budget_ms, lookahead_ms, "
    "monitors_claimed, jobs_written, chunks, cut_short, unrouted"
)


# pgpulse.tick_runs as revision 0001 made it; later revisions add columns after these
TICK_RUN_COLUMNS_0001 = (
    "id, trigger, started_at, finished_at, budget_ms, lookahead_ms, "
    "monitors_claimed, jobs_written, chunks, cut_short, unrouted"
)


# the regions table as revision 0001 made it; 0.2.0 adds the workers' columns after these
REGION_COLUMNS_0001 = (
    "code, enabled, is_default, fallback_region, healthy, healthy_changed_at, degraded, "
    "weight, created_at"
)


def contents(dsn: str, regions_table: str) -> dict[str, list]:
    tables = {
        "regions": f"(SELECT {REGION_COLUMNS_0001} FROM {regions_table})",
        "monitors": f"(SELECT {MONITOR_COLUMNS_0001} FROM public.monitors)",
        "outbox": "pgpulse.outbox",
        "dead_letters": "pgpulse.dead_letters",
        "tick_runs": f"(SELECT {TICK_RUN_COLUMNS_0001} FROM pgpulse.tick_runs)",
    }
    # dead letters as 0001 had them (0008 adds allow_fallback)
    dead_letter = (
        "(t.job_id, t.monitor_id, t.region, t.criticality, t.scheduled_for, "
        "t.deliver_at, t.expires_at, t.payload, t.attempts, t.last_error, t.failed_at)"
    )
    with psycopg.connect(dsn) as conn:
        return {
            name: conn.execute(
                f"SELECT {dead_letter if name == 'dead_letters' else 't'}::text AS row "
                f"FROM {table} t ORDER BY row"
            ).fetchall()
            for name, table in tables.items()
        }


def host_versions(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")]


def test_a_populated_0001_install_upgrades_to_head_keeping_every_row(pg_server, empty_db, capsys):
    dsn = empty_db()
    install_0001_as_released(dsn)
    populate(dsn)
    before = contents(dsn, "public.regions")
    assert [len(before[t]) for t in ("regions", "monitors", "dead_letters", "tick_runs")] == [
        3,
        300,
        7,
        1,
    ]
    assert len(before["outbox"]) > 50

    migrate.upgrade(dsn)

    assert version(dsn) == HEAD
    assert host_versions(dsn) == [HOST_REVISION]  # the host's history is untouched
    assert contents(dsn, "pgpulse.regions") == before
    with psycopg.connect(dsn) as conn:  # dead letters from before 0008 may fall back
        assert (
            conn.execute("SELECT bool_and(allow_fallback) FROM pgpulse.dead_letters").fetchone()[0]
            is True
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.regions')").fetchone()[0] is None
        # revision 0003: every monitor keeps its interval, in seconds too, and one region
        assert (
            conn.execute(
                "SELECT count(*) FILTER (WHERE check_interval_seconds = check_interval_minutes * 60"
                " AND check_regions IS NULL) FROM public.monitors"
            ).fetchone()[0]
            == 300
        )
        # routing reads the moved table: a tick still places jobs by preferred region
        conn.execute("UPDATE public.monitors SET next_check_at = now() - interval '1 second'")
        conn.execute("CALL pgpulse.tick(p_trigger => 'after-upgrade')")
        regions = dict(
            conn.execute("SELECT region, count(*) FROM pgpulse.outbox GROUP BY region").fetchall()
        )
    assert set(regions) == {"us-east-1", "eu-west-1", "ap-south-1"}

    # and back: 0001's layout again (regions in public), the rows still there
    # (check_interval_seconds and the tick's stop_reason go)
    migrate.downgrade(dsn, "0001", force=True)
    assert contents(dsn, "public.regions")["regions"] == before["regions"]


def test_a_hosts_own_alembic_history_is_never_touched(pg_server, empty_db, capsys):
    dsn = empty_db()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE public.alembic_version (version_num varchar(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute("INSERT INTO public.alembic_version VALUES (%s)", (HOST_REVISION,))
    migrate.upgrade(dsn)
    assert version(dsn) == HEAD and host_versions(dsn) == [HOST_REVISION]
    migrate.downgrade(dsn, "base")
    assert version(dsn) is None and host_versions(dsn) == [HOST_REVISION]


@pytest.mark.parametrize("id_type", ["uuid", "text"])
def test_adoption_leaves_a_products_own_regions_table_and_ids_alone(
    pg_server, empty_db, capsys, id_type
):
    dsn = empty_db()
    ids = {"uuid": "gen_random_uuid()", "text": "'mon_' || g"}[id_type]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE public.regions (id serial PRIMARY KEY, name text)")
        conn.execute("INSERT INTO public.regions (name) VALUES ('Europe'), ('Asia')")
        conn.execute(f"""
            CREATE TABLE public.monitors (id {id_type} PRIMARY KEY, url text NOT NULL,
                check_interval_minutes integer NOT NULL, is_active boolean NOT NULL,
                next_check_at timestamptz, last_scheduled_at timestamptz,
                preferred_region text, owner_email text);
            INSERT INTO public.monitors
            SELECT {ids}, 'https://e.example/' || g, 1, true, now() - interval '1 second',
                   NULL, NULL, 'ops@e.example' FROM generate_series(1, 20) g""")
    before = public_dump(pg_server, dsn), product_rows(dsn)
    migrate.upgrade(dsn)
    assert version(dsn) == HEAD
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true)")
        conn.execute("CALL pgpulse.tick(p_trigger => 'adopt-test', p_lookahead => '0')")
        assert conn.execute(
            "SELECT count(*), count(DISTINCT monitor_id) FROM pgpulse.outbox"
        ).fetchone() == (20, 20)
    assert product_rows(dsn) == before[1]
    # the columns pgpulse added to the product's table hold values: not without --force
    with pytest.raises(
        DowngradeDropsData, match=r"public\.monitors\.check_retries \(20 rows set\)"
    ):
        migrate.downgrade(dsn, "base")
    assert version(dsn) == HEAD and product_rows(dsn) == before[1]
    migrate.downgrade(dsn, "base", force=True)
    assert (public_dump(pg_server, dsn), product_rows(dsn)) == before


def public_dump(server: EmbeddedPostgres, dsn: str) -> str:
    """Schema public's structure (the host's version table aside)."""
    proc = subprocess.run(
        [
            str(server.bindir / "pg_dump"),
            "--schema-only",
            "--schema=public",
            "--no-owner",
            "--dbname",
            dsn,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(
        line
        for line in proc.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def product_rows(dsn: str) -> list:
    """The product's rows; next_check_at and last_scheduled_at are the tick's to write."""
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT r::text FROM public.regions r ORDER BY id").fetchall()
            + conn.execute(
                "SELECT id::text, url, check_interval_minutes, is_active, preferred_region,"
                " owner_email FROM public.monitors ORDER BY id"
            ).fetchall()
        )


def test_a_populated_0005_install_upgrades_to_0006_and_back(pg_server, empty_db, capsys):
    """0006 refuses non-finite next_check_at: rows holding one are kept, made finite
    (-infinity "check now" is due now, infinity "never" lies in year 9999); every other
    value stays. Down again, the schema is 0005's exactly."""
    dsn, reference = empty_db(), empty_db()
    migrate.upgrade(reference, "0005")
    migrate.upgrade(dsn, "0005")
    populate(dsn + "?options=-csearch_path%3Dpgpulse,public")  # regions is pgpulse's since 0002
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.monitors SET next_check_at = '-infinity' WHERE url LIKE '%/1'")
        conn.execute("UPDATE public.monitors SET next_check_at = 'infinity' WHERE url LIKE '%/2'")
    before = contents(dsn, "pgpulse.regions")

    migrate.upgrade(dsn)

    assert version(dsn) == HEAD
    after = contents(dsn, "pgpulse.regions")
    assert {k: v for k, v in after.items() if k != "monitors"} == {
        k: v for k, v in before.items() if k != "monitors"
    }
    changed = {row for row in after["monitors"]} - {row for row in before["monitors"]}
    assert len(changed) == 2 and len(after["monitors"]) == len(before["monitors"]) == 300
    with psycopg.connect(dsn, autocommit=True) as conn:
        ends = dict(
            conn.execute(
                "SELECT url, next_check_at <= now() FROM public.monitors "
                "WHERE url LIKE '%/1' OR url LIKE '%/2'"
            ).fetchall()
        )
        assert ends == {"https://example.com/1": True, "https://example.com/2": False}
        assert (
            conn.execute(
                "SELECT extract(year FROM next_check_at) FROM public.monitors WHERE url LIKE '%/2'"
            ).fetchone()[0]
            == 9999
        )
        run_id = conn.execute("CALL pgpulse.tick(p_trigger => 'after-0006')").fetchone()[0]
        assert conn.execute(
            "SELECT stop_reason, skipped FROM pgpulse.tick_runs WHERE id = %s", (run_id,)
        ).fetchone() == ("drained", 0)

    migrate.downgrade(dsn, "0005", force=True)  # the runs' stop_reason goes
    assert version(dsn) == "0005"
    assert same_schema(pg_server, dsn, reference)


def test_offline_sql_builds_the_same_schema_when_a_dba_runs_it(pg_server, empty_db, tmp_path):
    """`pgpulse migrate --sql` prints the DDL without a database (the URL points nowhere);
    psql runs it into an empty database: the schema equals a migrated one, at head."""
    printed = pgpulse(
        "migrate", "--sql", database_url="postgresql://nobody@127.0.0.1:9/nowhere", cwd=tmp_path
    )
    assert printed.returncode == 0, printed.stderr
    script = tmp_path / "upgrade.sql"
    script.write_text(printed.stdout)
    by_dba, migrated = empty_db(), empty_db()
    subprocess.run(
        [
            str(pg_server.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            by_dba,
            "-f",
            str(script),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    migrate.upgrade(migrated)
    assert version(by_dba) == HEAD
    assert schema_dump(pg_server, by_dba) == schema_dump(pg_server, migrated)


def _intent_pairs(conn: psycopg.Connection) -> set[tuple[str, str]]:
    """(job id, region) of every push intent, whatever the table's layout."""
    per_request = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'pgpulse.push_intents'::regclass"
        " AND attname = 'job_ids'"
    ).fetchone()[0]
    sql = (
        "SELECT u::text, i.region FROM pgpulse.push_intents i, unnest(i.job_ids) u"
        if per_request
        else "SELECT job_id::text, region FROM pgpulse.push_intents"
    )
    return set(conn.execute(sql).fetchall())


def test_a_0012_install_keeps_its_push_intents_through_0013_and_back(pg_server, empty_db, capsys):
    """0013 keeps one push intent per request instead of one per job: every job an intent
    named is still pinned where it was (a claim sees it), and held back from a reroute;
    down again, one row per job as before and 0012's schema exactly."""
    dsn, reference = empty_db(), empty_db()
    migrate.upgrade(reference, "0012")
    migrate.upgrade(dsn, "0012")
    populate(dsn + "?options=-csearch_path%3Dpgpulse,public")
    with psycopg.connect(dsn, autocommit=True) as conn:
        jobs = [
            job_id
            for (job_id,) in conn.execute(
                "SELECT job_id::text FROM pgpulse.outbox WHERE region = 'us-east-1'"
                " ORDER BY job_id LIMIT 6"
            )
        ]
        conn.execute(
            "UPDATE pgpulse.outbox SET deliver_at = now() - interval '1 second'"
            " WHERE job_id = ANY (%s::uuid[])",
            (jobs,),
        )
        # two pushed to the fallback (pinned there), two to their own region, and two
        # intents of jobs that are gone
        conn.execute(
            """
            INSERT INTO pgpulse.push_intents (job_id, region, expires_at)
            SELECT j::uuid, r, now() + interval '5 minutes'
              FROM unnest(%s::text[], %s::text[]) AS t(j, r)""",
            (
                jobs[:4]
                + ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"],
                ["eu-west-1", "eu-west-1", "us-east-1", "us-east-1", "ap-south-1", "ap-south-1"],
            ),
        )
        before = _intent_pairs(conn)
    assert len(before) == 6

    migrate.upgrade(dsn)

    assert version(dsn) == HEAD
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _intent_pairs(conn) == before
        assert set(
            conn.execute(
                "SELECT region, from_region, cardinality(job_ids) FROM pgpulse.push_intents"
            ).fetchall()
        ) == {
            ("eu-west-1", "us-east-1", 2),
            ("us-east-1", "us-east-1", 2),
            ("ap-south-1", "ap-south-1", 2),
        }
        # the claim as the relay runs it: pinned jobs name their region
        with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                queries()["claim_due"],
                {"region": "us-east-1", "limit": 1000, "fallback_only": False, "held_by": None},
            ).fetchall()
        pinned = {r["job_id"]: r["pinned_to"] for r in rows if r["job_id"] in jobs}
        assert pinned == {
            jobs[0]: "eu-west-1",
            jobs[1]: "eu-west-1",
            jobs[2]: None,
            jobs[3]: None,
            jobs[4]: None,
            jobs[5]: None,
        }
        # rerouting us-east-1's jobs: the two that may be in its queue already stay
        with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                queries()["claim_due"],
                {
                    "region": "us-east-1",
                    "limit": 1000,
                    "fallback_only": True,
                    "held_by": "us-east-1",
                },
            ).fetchall()
        assert {r["job_id"] for r in rows} & set(jobs) == {jobs[0], jobs[1], jobs[4], jobs[5]}

    migrate.downgrade(dsn, "0012", force=True)  # the intents' from_region and ids go
    assert version(dsn) == "0012"
    with psycopg.connect(dsn) as conn:
        assert _intent_pairs(conn) == before
    assert same_schema(pg_server, dsn, reference)


def _rows_by_table(dsn: str, columns: dict[str, list[str]] | None = None) -> dict[str, list]:
    """Every row of public.monitors and of each pgpulse table as text, sorted; with columns,
    only those columns of each table (the ones it had at the last release)."""
    with psycopg.connect(dsn) as conn:
        tables = columns or {
            f"{schema}.{name}": [
                c
                for (c,) in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
                    " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (f"{schema}.{name}",),
                )
            ]
            for schema, name in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                "    ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'"
                "   AND (n.nspname = 'pgpulse' OR (n.nspname, c.relname) = ('public', 'monitors'))"
            )
        }
        if columns is None:
            return tables
        return {
            table: [
                row
                for (row,) in conn.execute(
                    f"SELECT ({', '.join(cols)})::text AS row FROM {table} ORDER BY row"
                )
            ]
            for table, cols in tables.items()
        }


def test_a_populated_last_release_install_upgrades_to_head_and_back_keeping_every_row(
    pg_server, empty_db, capsys
):
    """A database at the last release, with monitors, jobs waiting, dead letters, push
    intents, maintenance windows and tick runs, goes through the unreleased revision without
    losing a row or a value, and back to the last release's schema exactly."""
    dsn, reference = empty_db(), empty_db()
    migrate.upgrade(reference, LAST_RELEASE)
    migrate.upgrade(dsn, LAST_RELEASE)
    populate(dsn + "?options=-csearch_path%3Dpgpulse,public")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgpulse.push_intents (region, from_region, job_ids, expires_at)
            SELECT 'eu-west-1', region, array_agg(job_id), max(expires_at)
              FROM (SELECT * FROM pgpulse.outbox ORDER BY job_id LIMIT 5) j GROUP BY region;
            INSERT INTO pgpulse.maintenance_windows (time_zone, starts_local, ends_local)
            VALUES ('Europe/Berlin', '2030-01-01 02:00', '2030-01-01 03:00')""")
    columns = _rows_by_table(dsn)
    before = _rows_by_table(dsn, columns)
    kept = (
        "public.monitors",
        "pgpulse.regions",
        "pgpulse.outbox",
        "pgpulse.dead_letters",
        "pgpulse.push_intents",
        "pgpulse.maintenance_windows",
        "pgpulse.tick_runs",
    )
    assert [t for t in kept if not before[t]] == []

    # every row and value is kept where it was, but the product's check_spec: derived from
    # the check's columns, pgpulse's schedule holds it since 0.2.0, with what pgpulse kept
    # in the product's rows (which stay there, no longer written)
    kept = {
        table: [c for c in cols if (table, c) != ("public.monitors", "check_spec")]
        for table, cols in columns.items()
    }
    before_kept = _rows_by_table(dsn, kept)
    with psycopg.connect(dsn) as conn:
        held = conn.execute(
            "SELECT (id, next_check_at, last_scheduled_at, check_interval_seconds, check_spec)::text"
            " FROM public.monitors ORDER BY 1"
        ).fetchall()

    migrate.upgrade(dsn)
    assert version(dsn) == HEAD
    assert _rows_by_table(dsn, kept) == before_kept
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute(
                "SELECT (monitor_id, next_check_at, last_scheduled_at, check_interval_seconds,"
                " check_spec)::text FROM pgpulse.schedule ORDER BY 1"
            ).fetchall()
            == held
        )

    # (the schedule's rows go back into the product's table: the guard counts its table)
    migrate.downgrade(dsn, LAST_RELEASE, force=True)
    assert version(dsn) == LAST_RELEASE
    assert _rows_by_table(dsn, columns) == before
    assert same_schema(pg_server, dsn, reference)


def test_the_upgrade_to_the_schedule_under_concurrent_product_writes(pg_server, empty_db, capsys):
    """A populated 0016 install upgrades while the product inserts, edits and deletes
    monitors: every product row ends with exactly one schedule row that holds what the
    product's row says, no slot is lost or doubled, and writers waited only for the short
    lock at the end (none failed)."""
    dsn = empty_db()
    migrate.upgrade(dsn, LAST_RELEASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true)")
        conn.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, next_check_at)"
            " SELECT 'https://e.example/' || g, 1 + g % 5, now() - interval '1 second'"
            " FROM generate_series(1, 20000) g"
        )
        conn.execute("CALL pgpulse.tick(p_trigger => 'before-upgrade')")
        jobs_before = conn.execute("SELECT count(*) FROM pgpulse.outbox").fetchone()[0]
    stop = threading.Event()
    writes: list[str] = []
    errors: list[BaseException] = []

    def product() -> None:
        n = 0
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    n += 1
                    conn.execute(
                        "INSERT INTO public.monitors (url, check_interval_minutes) VALUES (%s, 2)",
                        (f"https://during.example/{n}",),
                    )
                    conn.execute(
                        "UPDATE public.monitors SET criticality = 'high', is_active = %s"
                        " WHERE url = %s",
                        (n % 3 != 0, f"https://e.example/{n}"),
                    )
                    conn.execute(
                        "DELETE FROM public.monitors WHERE url = %s",
                        (f"https://e.example/{n + 9000}",),
                    )
                    writes.append(f"{n}")
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    writer = threading.Thread(target=product)
    writer.start()
    try:
        wait_until = time.monotonic() + 30
        while len(writes) < 20 and time.monotonic() < wait_until:
            time.sleep(0.05)
        migrate.upgrade(dsn)
        during = len(writes)
        wait_until = time.monotonic() + 30
        while len(writes) < during + 20 and time.monotonic() < wait_until:
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join()
    assert errors == []
    assert len(writes) >= during + 20  # the product kept writing after the upgrade
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM pgpulse.drift()").fetchone()[2:] == (0, 0, 0)
        differing, followed = conn.execute(
            "SELECT count(*) FILTER (WHERE s.is_active IS DISTINCT FROM m.is_active"
            "                        OR s.criticality IS DISTINCT FROM m.criticality),"
            " count(*) FROM public.monitors m JOIN pgpulse.schedule s ON s.monitor_id = m.id"
        ).fetchone()
        products = conn.execute("SELECT count(*) FROM public.monitors").fetchone()[0]
        assert differing == 0 and followed == products > 20000 - len(writes)
        # the jobs written before stay, once each (slots of deleted or deactivated monitors go)
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT monitor_id, region, scheduled_for FROM pgpulse.outbox"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        ).fetchone()[0]
        assert doubled == 0 and jobs_before > 0
