"""Bounded growth: the tick prunes old run records and dead letters (retention), pg_cron's
run history is pruned including runs that never ended.

migrations/sql/0007_roles.sql is this revision's copy of sql/roles.sql (the ticker may
delete what it prunes), 0007_cron.sql its copy of sql/cron.sql (the pg_cron prune job).

Revision ID: 0007
Revises: 0006
"""

from migrations.sqlfile import apply

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply(
        "migrations/sql/0007_retention.sql",
        "migrations/sql/0007_roles.sql",
        "migrations/sql/0007_cron.sql",
    )


def downgrade() -> None:
    apply("migrations/sql/0007_retention_down.sql")
