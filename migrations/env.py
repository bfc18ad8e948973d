"""Alembic environment: one psycopg connection, no ORM models; revisions apply SQL files.

Alembic's version table is pgpulse.alembic_version, so a host application's own history in
public.alembic_version is never read or written."""

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from migrations.sqlfile import convert_legacy, finish, head_setup, move_version_out_of_public
from relay.config import database_url, sqlalchemy_url

VERSION_SCHEMA = "pgpulse"

config = context.config


def run_online() -> None:
    url = sqlalchemy_url(config.attributes.get("dsn") or database_url())
    engine = create_engine(url, poolclass=pool.NullPool)
    revisions = {rev.revision for rev in context.script.walk_revisions()}
    with engine.connect() as connection:
        with connection.begin():
            # the version table's schema must exist before Alembic creates the table in it
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {VERSION_SCHEMA}"))
            move_version_out_of_public(connection, revisions)
        dry_run = config.attributes.get("dry_run")
        if dry_run is not None:
            run_dry(connection, dry_run)
            return
        # a legacy revision (0001-0016) is no revision Alembic knows: converted first
        convert_legacy(connection, config)
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            version_table_schema=VERSION_SCHEMA,
        )
        with context.begin_transaction():
            context.run_migrations()
        migration = context.get_context()
        at_head = set(migration.get_current_heads()) == set(context.script.get_heads())
        finish(migration, head_setup(context.script) if at_head else ())


def run_dry(connection: Connection, measured: dict) -> None:
    """relay.migrate.would_drop: the migrations run in one transaction, rolled back, and
    the catalog is read before and after them. Alembic opens no transaction of its own
    inside one it did not begin."""
    from relay.migrate import Catalog

    raw = connection.connection.driver_connection
    with connection.begin() as outer:
        measured["before"] = Catalog.read(raw)
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            version_table_schema=VERSION_SCHEMA,
        )
        with context.begin_transaction():
            context.run_migrations()
        measured["after"] = Catalog.read(raw)
        outer.rollback()


def run_offline() -> None:
    """`pgpulse migrate --sql`: the DDL for an empty database, printed, no connection."""
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        transaction_per_migration=True,
        version_table_schema=VERSION_SCHEMA,
    )
    context.get_context().impl.static_output(f"CREATE SCHEMA IF NOT EXISTS {VERSION_SCHEMA};\n")
    with context.begin_transaction():
        context.run_migrations()
    destination = context.script.get_revision(context.get_revision_argument())
    at_head = destination is not None and destination.is_head
    finish(context.get_context(), head_setup(context.script) if at_head else ())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
