"""The tick routes multi-region monitors inline: no SQL function call (an executor started)
per monitor.

Revision ID: 0014
Revises: 0013
"""

from migrations.sqlfile import apply

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0014_tick_routes_inline.sql")


def downgrade() -> None:
    apply("migrations/sql/0014_tick_routes_inline_down.sql")
