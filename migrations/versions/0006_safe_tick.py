"""A tick that is safe inside a product's database: pinned search_path, run by pg_cron as
pgpulse_ticker, no poison row, a hard time budget, edits that reach the outbox.

migrations/sql/0006_roles.sql is this revision's copy of sql/roles.sql (the roles pg_cron
and the relay run as); 0006_cron.sql, its copy of sql/cron.sql as 0006 was released,
then reschedules the tick as pgpulse_ticker.

Revision ID: 0006
Revises: 0005
"""

from migrations.sqlfile import apply

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply(
        "migrations/sql/0006_safe_tick.sql",
        "migrations/sql/0006_roles.sql",
        "migrations/sql/0006_cron.sql",
    )


def downgrade() -> None:
    apply("migrations/sql/0006_safe_tick_down.sql")
