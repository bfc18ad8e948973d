"""The tick's default lookahead is 70 s (was 60 s): pg_cron starts a minute's tick up to
about a second late, and with a horizon of exactly one minute the first second's slots of
that minute were written, and published, up to 1.2 s late.

Revision ID: 0016
Revises: 0015
"""

from migrations.sqlfile import apply

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0016_lookahead_covers_a_late_tick.sql")


def downgrade() -> None:
    apply("migrations/sql/0016_lookahead_covers_a_late_tick_down.sql")
