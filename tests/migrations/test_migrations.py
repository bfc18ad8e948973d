"""Alembic migrations: they build exactly the schema in sql/, go down to nothing and up
again, install the pg_cron jobs where pg_cron runs and warn where it does not."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg.rows import dict_row

from relay import __version__, migrate
from relay.errors import DowngradeDropsData
from relay.local.embedded import EmbeddedPostgres
from relay.resources import schema_sql
from tests.support.catalog import catalog, cron_job_rows, differences
from tests.support.cli import ROOT, assert_one_line_error, pgpulse
from tests.support.dsn import as_user
from tests.support.legacy import load_legacy
from tests.support.ops import LOGINS

HEAD = "0.2.0"
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
            "ALTER FUNCTION pgpulse._unrouted(timestamptz, jsonb, text[], integer) VOLATILE": "functions pgpulse._unrouted(timestamp with time zone,jsonb,text[],integer): definition",
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
    assert objects(dsn) == {"schemas": 1, "tables": 14, "routines": 59, "has_version_table": True}

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


# ------------------------------------------------------------ legacy installs convert

HOST_REVISION = "1f2e3d4c5b6a"  # a host application's own Alembic head (created_0001)
# pgpulse's tables whose rows a conversion keeps (regions in public before 0002)
KEPT = (
    "regions",
    "maintenance_windows",
    "outbox",
    "dead_letters",
    "push_intents",
    "region_observations",
    "tick_runs",
)
# a product's own monitors table and regions (the adopted fixtures' shape before pgpulse)
PRODUCT = """
    CREATE TABLE public.monitors (id bigserial PRIMARY KEY, url text NOT NULL,
        check_interval_minutes integer NOT NULL DEFAULT 5, is_active boolean NOT NULL,
        next_check_at timestamptz, last_scheduled_at timestamptz, preferred_region text,
        owner_email text);
    CREATE TABLE public.regions (id serial PRIMARY KEY, name text)"""


def table_rows(dsn: str) -> dict[str, list[dict]]:
    """Each kept table's rows as json objects, sorted; regions from public before 0002."""
    with psycopg.connect(dsn) as conn:
        found = {}
        for name in KEPT:
            table = f"pgpulse.{name}"
            if (
                name == "regions"
                and conn.execute("SELECT to_regclass('pgpulse.regions') IS NULL").fetchone()[0]
            ):
                table = "public.regions"
            if conn.execute("SELECT to_regclass(%s) IS NULL", (table,)).fetchone()[0]:
                continue
            found[name] = [
                r for (r,) in conn.execute(f"SELECT to_jsonb(t) FROM {table} t ORDER BY 1::text")
            ]
            found[name].sort(key=str)
        return found


def common(before: list[dict], after: list[dict]) -> tuple[list[dict], list[dict]]:
    """Both sides' rows cut to the columns both have."""
    keys = set(before[0]) & set(after[0]) if before and after else set()
    cut = [sorted(({k: r[k] for k in keys} for r in rows), key=str) for rows in (before, after)]
    return cut[0], cut[1]


def own_rows(dsn: str, columns: str) -> list:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT {columns} FROM public.monitors ORDER BY id").fetchall()


# What a converted install may hold that a fresh install of 0.2.0 does not: where the columns
# of public.monitors stand (a conversion keeps the product's table as it is, and columns are
# only ever appended), and the identity counters of tables whose rows came across.
def allowed(line: str) -> bool:
    return re.fullmatch(r"columns public\.monitors\.\w+: position differ", line) is not None


@pytest.mark.parametrize(
    "fixture", ["created_0001", "adopted_0001", "created_0016", "adopted_0016"]
)
def test_a_populated_legacy_install_converts_to_0_2_0_keeping_every_row(
    pg_server, empty_db, capsys, fixture
):
    """Regions, jobs in flight, dead letters, push intents, maintenance windows, tick runs:
    every row comes across; every monitor gets its schedule from what the legacy install kept
    in the product's row; the product's own columns keep their values; the catalog is a fresh
    install's, but for the allow-list above."""
    dsn, fresh = empty_db(), empty_db()
    load_legacy(pg_server, dsn, fixture)
    adopted = fixture.startswith("adopted")
    own = "id, url, check_interval_minutes, is_active, preferred_region" + (
        ", owner_email" if adopted else ", method, criticality, created_at"
    )
    before, product_before = table_rows(dsn), own_rows(dsn, own)
    with psycopg.connect(dsn) as conn:
        held = conn.execute(
            "SELECT id::text, next_check_at, last_scheduled_at FROM public.monitors ORDER BY 1"
        ).fetchall()
    assert [t for t in ("regions", "outbox", "dead_letters", "tick_runs") if not before[t]] == []

    migrate.upgrade(dsn)

    assert version(dsn) == HEAD
    if fixture == "created_0001":  # its row was in public.alembic_version, beside the host's
        assert host_versions(dsn) == [HOST_REVISION]
    after = table_rows(dsn)
    for name, rows in before.items():
        if name == "push_intents":  # one row per request since 0013: the same jobs, pinned
            assert sorted(j for r in after[name] for j in r["job_ids"]) == sorted(
                j for r in rows for j in r["job_ids"]
            )
            continue
        kept, now = common(rows, after[name])
        assert len(now) == len(rows) and now == kept, name
    assert own_rows(dsn, own) == product_before
    with psycopg.connect(dsn, autocommit=True) as conn:
        schedule = conn.execute(
            "SELECT monitor_id::text, next_check_at, last_scheduled_at FROM pgpulse.schedule"
            " ORDER BY 1"
        ).fetchall()
        assert schedule == held
        assert conn.execute("SELECT * FROM pgpulse.drift()").fetchone()[2:] == (0, 0, 0)
        assert conn.execute("SELECT to_regnamespace('pgpulse_legacy')").fetchone()[0] is None
        # a tick runs on what came across
        conn.execute("CALL pgpulse.tick(p_trigger => 'after-conversion')")

    with psycopg.connect(fresh) as conn:
        if adopted:
            conn.execute(PRODUCT)
    migrate.upgrade(fresh)
    with psycopg.connect(dsn) as a, psycopg.connect(fresh) as b:
        found = differences(catalog(a), catalog(b))
    assert [line for line in found if not allowed(line)] == []

    # and down to base: the product's table as it was before pgpulse (adopted), or gone
    migrate.downgrade(dsn, "base", force=True)
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT to_regclass('public.monitors') IS NOT NULL").fetchone()[0]
    assert left == adopted
    if adopted:
        assert own_rows(dsn, own) == product_before
        with psycopg.connect(dsn) as conn:
            columns = [
                c
                for (c,) in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'public.monitors'::regclass"
                    " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
                )
            ]
        assert columns == [
            "id",
            "url",
            "check_interval_minutes",
            "is_active",
            "next_check_at",
            "last_scheduled_at",
            "preferred_region",
            "owner_email",
        ]


def test_a_legacy_install_converts_from_the_printed_sql_too(pg_server, empty_db, tmp_path):
    """`pgpulse migrate --sql --from 0016` prints the conversion: psql runs it."""
    printed = pgpulse("migrate", "--sql", "--from", "0016", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "convert.sql").write_text(printed.stdout)
    dsn = empty_db()
    load_legacy(pg_server, dsn, "created_0016")
    subprocess.run(
        [
            str(pg_server.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            dsn,
            "-f",
            str(tmp_path / "convert.sql"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert version(dsn) == HEAD


def test_a_legacy_state_it_cannot_take_is_refused_in_one_line(pg_server, empty_db):
    dsn = empty_db()
    load_legacy(pg_server, dsn, "created_0016")
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO pgpulse.alembic_version VALUES ('0.2.0')")
    line = assert_one_line_error(pgpulse("migrate", database_url=dsn), command="migrate")
    assert "name 0.2.0, 0016" in line and "run `pgpulse migrate` again" in line, line
    line = assert_one_line_error(
        pgpulse("migrate", "--downgrade", "base", database_url=dsn), command="migrate"
    )
    assert "pgpulse migrate" in line


def test_a_relay_of_another_release_refuses_the_schema_in_one_line(pg_server, empty_db):
    dsn = empty_db()
    load_legacy(pg_server, dsn, "created_0016")
    line = assert_one_line_error(pgpulse("relay", "--once", database_url=dsn), command="relay")
    assert "needs schema revision 0.2.0, but the database is at revision 0016" in line, line
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE pgpulse.alembic_version SET version_num = '0.3.0'")
    line = assert_one_line_error(pgpulse("relay", "--once", database_url=dsn), command="relay")
    assert (
        f"pgpulse {__version__} needs schema revision 0.2.0" in line and "(pgpulse 0.3.0)" in line
    )
    # and as the relay's own least-privilege role (it may read the version, nothing more)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LOGINS)
    line = assert_one_line_error(
        pgpulse("relay", "--once", database_url=as_user(dsn, "relay_app")), command="relay"
    )
    assert "(pgpulse 0.3.0)" in line, line


def host_versions(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")]


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


def test_the_upgrade_to_the_schedule_under_concurrent_product_writes(pg_server, empty_db, capsys):
    """A populated 0016 install converts while the product inserts, edits and deletes
    monitors: every product row ends with exactly one schedule row that holds what the
    product's row says, no slot is lost or doubled, and writers waited only for the short
    lock at the end (none failed)."""
    dsn = empty_db()
    load_legacy(pg_server, dsn, "created_0016")
    with psycopg.connect(dsn, autocommit=True) as conn:
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
