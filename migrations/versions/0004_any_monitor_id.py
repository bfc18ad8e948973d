"""Slots for monitor ids that are not uuids (an adopted product table's bigint or text ids).

Revision ID: 0004
Revises: 0003
"""

from migrations.sqlfile import apply

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0004_any_monitor_id.sql")


def downgrade() -> None:
    apply("migrations/sql/0004_any_monitor_id_down.sql")
