"""Maintenance windows: once or weekly, in an IANA time zone, for some monitors or all.

Revision ID: 0005
Revises: 0004
"""

from migrations.sqlfile import apply

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0005_maintenance_windows.sql")


def downgrade() -> None:
    apply("migrations/sql/0005_maintenance_windows_down.sql")
