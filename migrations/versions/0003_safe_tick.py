"""A tick that is safe inside a product's database: pinned search_path, run by pg_cron as
pgpulse_ticker, no poison row, a hard time budget, edits that reach the outbox.

migrations/sql/0003_roles.sql is this revision's copy of sql/roles.sql; sql/cron.sql then
reschedules the pg_cron job as pgpulse_ticker where pg_cron runs.

Revision ID: 0003
Revises: 0001
"""

from migrations.sqlfile import apply

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0003_safe_tick.sql", "migrations/sql/0003_roles.sql", "sql/cron.sql")


def downgrade() -> None:
    apply("migrations/sql/0003_safe_tick_down.sql")
