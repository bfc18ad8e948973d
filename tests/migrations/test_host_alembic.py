"""A host application runs pgpulse's revisions from its own Alembic (docs/adopting.md, step
4): its env.py calls relay.migrate.run_pgpulse_migrations after its own migrations, so its
usual `alembic upgrade head` upgrades both histories (pgpulse's in pgpulse.alembic_version)
and sets up the roles and pg_cron. The older way, add_to_alembic, still works with `alembic
upgrade heads`, and `alembic downgrade pgpulse@base` takes pgpulse out again."""

from __future__ import annotations

import os

import psycopg
import pytest
from alembic.script import ScriptDirectory

from relay import migrate
from relay.config import sqlalchemy_url
from tests.support.cli import pgpulse, run_module

HOST_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

from relay.migrate import add_to_alembic

add_to_alembic(context.script)  # pgpulse's revisions, branch `pgpulse`, beside ours

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

HOST_REVISION = """
from alembic import op

revision = "h001"
down_revision = None
branch_labels = ("product",)
depends_on = None


def upgrade():
    op.execute("CREATE TABLE public.products (id bigint PRIMARY KEY, name text)")


def downgrade():
    op.execute("DROP TABLE public.products")
"""


@pytest.fixture
def dsn(pg_server):
    name = f"host{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_hosts_own_alembic_runs_pgpulses_revisions(dsn, tmp_path):
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic" / "env.py").write_text(HOST_ENV)
    (tmp_path / "alembic" / "versions" / "h001_products.py").write_text(HOST_REVISION)
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic\npath_separator = os\n"
        f"sqlalchemy.url = {sqlalchemy_url(dsn).replace('%', '%%')}\n"
    )

    def alembic(*args: str) -> str:
        done = run_module("alembic", *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    alembic("upgrade", "heads")
    with psycopg.connect(dsn) as conn:
        versions = {v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")}
        assert conn.execute(
            "SELECT to_regclass('pgpulse.outbox') IS NOT NULL,"
            " to_regclass('pgpulse.alembic_version') IS NULL"
        ).fetchone() == (True, True)
    head = ScriptDirectory.from_config(migrate.alembic_config(None)).get_current_head()
    assert versions == {"h001", head}  # both branches, in the host's own version table

    alembic("downgrade", "pgpulse@base")
    with psycopg.connect(dsn) as conn:
        assert [v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")] == [
            "h001"
        ]
        assert conn.execute(
            "SELECT to_regnamespace('pgpulse') IS NULL, to_regclass('public.products') IS NOT NULL"
        ).fetchone() == (True, True)


HOST_ENV_KEEPING_ITS_HEAD = """
from alembic import context
from sqlalchemy import engine_from_config, pool

from relay.migrate import run_pgpulse_migrations

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    run_pgpulse_migrations(connection)  # pgpulse's own history, in pgpulse.alembic_version
"""

# the product's own revisions: its monitors table before pgpulse arrives, a column after
HOST_FIRST = """
from alembic import op

revision = "h001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE public.monitors (id bigserial PRIMARY KEY, url text NOT NULL,"
               " check_interval_minutes integer NOT NULL DEFAULT 5,"
               " is_active boolean NOT NULL DEFAULT true, next_check_at timestamptz,"
               " last_scheduled_at timestamptz, preferred_region text)")


def downgrade():
    op.execute("DROP TABLE public.monitors")
"""

HOST_SECOND = """
from alembic import op

revision = "h002"
down_revision = "h001"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE public.monitors ADD COLUMN team text")


def downgrade():
    op.execute("ALTER TABLE public.monitors DROP COLUMN team")
"""


def test_the_hosts_usual_upgrade_head_upgrades_both_histories(dsn, tmp_path):
    versions_dir = tmp_path / "alembic" / "versions"
    versions_dir.mkdir(parents=True)
    (tmp_path / "alembic" / "env.py").write_text(HOST_ENV_KEEPING_ITS_HEAD)
    (versions_dir / "h001_monitors.py").write_text(HOST_FIRST)
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic\npath_separator = os\n"
        f"sqlalchemy.url = {sqlalchemy_url(dsn).replace('%', '%%')}\n"
    )
    head = ScriptDirectory.from_config(migrate.alembic_config(None)).get_current_head()

    def upgrade_head() -> str:
        done = run_module("alembic", "upgrade", "head", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def versions(conn, table: str) -> set[str]:
        return {v for (v,) in conn.execute(f"SELECT version_num FROM {table}")}

    upgrade_head()
    with psycopg.connect(dsn) as conn:
        assert versions(conn, "public.alembic_version") == {"h001"}  # the host's one head
        assert versions(conn, "pgpulse.alembic_version") == {head}
        # the host's monitors table was there first: adopted, not replaced
        assert conn.execute(
            "SELECT to_regclass('pgpulse.outbox') IS NOT NULL, count(*) > 0"
            "  FROM pgpulse.adoption WHERE kind = 'column'"
        ).fetchone() == (True, True)
        # the roles' set-up ran on this path: the tick's steps belong to pgpulse_owner
        conn.execute("ALTER FUNCTION pgpulse._follow_insert() OWNER TO CURRENT_USER")

    # a later revision of the host's: the same command, pgpulse at head already
    (versions_dir / "h002_team.py").write_text(HOST_SECOND)
    upgrade_head()
    with psycopg.connect(dsn) as conn:
        assert versions(conn, "public.alembic_version") == {"h002"}
        assert versions(conn, "pgpulse.alembic_version") == {head}
        assert conn.execute(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc"
            " WHERE oid = 'pgpulse._follow_insert()'::regprocedure"
        ).fetchone() == ("pgpulse_owner",)
        # pgpulse's triggers on the host's table work after both histories moved on
        conn.execute("INSERT INTO public.monitors (url, team) VALUES ('https://a.example', 'x')")
        assert conn.execute(
            "SELECT s.next_check_at IS NOT NULL FROM public.monitors m"
            " JOIN pgpulse.schedule s ON s.monitor_id = m.id"
        ).fetchone() == (True,)


def test_an_install_made_with_add_to_alembic_moves_over_with_one_pgpulse_migrate(dsn, tmp_path):
    (tmp_path / "alembic" / "versions").mkdir(parents=True)
    (tmp_path / "alembic" / "env.py").write_text(HOST_ENV)
    (tmp_path / "alembic" / "versions" / "h001_products.py").write_text(HOST_REVISION)
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = %(here)s/alembic\npath_separator = os\n"
        f"sqlalchemy.url = {sqlalchemy_url(dsn).replace('%', '%%')}\n"
    )
    done = run_module("alembic", "upgrade", "heads", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    moved = pgpulse("migrate", database_url=dsn)
    assert moved.returncode == 0, moved.stderr
    head = ScriptDirectory.from_config(migrate.alembic_config(None)).get_current_head()
    with psycopg.connect(dsn) as conn:
        assert [v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")] == [
            "h001"
        ]
        assert [v for (v,) in conn.execute("SELECT version_num FROM pgpulse.alembic_version")] == [
            head
        ]
