"""Maintenance windows: once or weekly, in an IANA time zone, for some monitors or all.

Revision ID: 0004
Revises: 0003
"""

from migrations.sqlfile import apply

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0004_maintenance_windows.sql")


def downgrade() -> None:
    apply("migrations/sql/0004_maintenance_windows_down.sql")
