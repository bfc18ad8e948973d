"""Initial schema: monitors, regions, outbox, dead letters, tick runs, the tick, pg_cron jobs.

migrations/sql/0001_initial.sql is this revision's own copy of sql/schema.sql, and
0001_cron.sql and 0001_drop.sql of sql/cron.sql and sql/drop.sql: once released they are
never edited; a later change gets a new revision with its own SQL, and tests/migrations
proves the migrated database still equals one built from sql/.

0001_cron.sql is sql/cron.sql as 0001 was released (git: 7407e8d, unchanged until 0002
landed). 0001_drop.sql is sql/drop.sql as of e4d5658, which made 0001 adopt an existing
public.monitors and its downgrade leave that table's own rows and columns: the downgrade
must undo every path of the upgrade, so its copy is the one that knows adoption.

Revision ID: 0001
Revises:
"""

from migrations.sqlfile import apply

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0001_initial.sql", "migrations/sql/0001_cron.sql")


def downgrade() -> None:
    apply("migrations/sql/0001_drop.sql")
