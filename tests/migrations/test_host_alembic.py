"""A host application runs pgpulse's revisions from its own Alembic (docs/adopting.md, step
4): its env.py adds them beside its own, `alembic upgrade heads` runs both branches, and
`alembic downgrade pgpulse@base` takes pgpulse out again, the host's own history untouched."""

from __future__ import annotations

import os

import psycopg
import pytest
from alembic.script import ScriptDirectory

from relay import migrate
from relay.config import sqlalchemy_url
from tests.support.cli import run_module

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
