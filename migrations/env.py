"""Alembic environment: one psycopg connection, no ORM models; revisions apply SQL files."""

from alembic import context
from sqlalchemy import create_engine, pool

from relay.config import database_url, sqlalchemy_url

config = context.config
url = sqlalchemy_url(config.attributes.get("dsn") or database_url())
engine = create_engine(url, poolclass=pool.NullPool)

with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
