"""A new, re-activated or re-phased monitor's first check on time (not at the next tick).

Revision ID: 0006
Revises: 0005
"""

from migrations.sqlfile import apply

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0006_first_check_on_time.sql")


def downgrade() -> None:
    apply("migrations/sql/0006_first_check_on_time_down.sql")
