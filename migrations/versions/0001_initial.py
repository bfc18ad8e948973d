"""Initial schema: monitors, regions, outbox, dead letters, tick runs, the tick, pg_cron jobs.

migrations/sql/0001_initial.sql is this revision's own copy of sql/schema.sql: once
released it is never edited; a later schema change gets a new revision with its own SQL,
and tests/migrations proves the migrated schema still equals sql/schema.sql.

Revision ID: 0001
Revises:
"""

from migrations.sqlfile import apply

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0001_initial.sql", "sql/cron.sql")


def downgrade() -> None:
    apply("sql/drop.sql")
