"""A new, re-activated or re-phased monitor's first check on time (not at the next tick).

migrations/sql/0009_roles.sql is this revision's copy of sql/roles.sql (the ticker's grant
on the tick chunk's new signature).

Revision ID: 0009
Revises: 0008
"""

from migrations.sqlfile import apply

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0009_first_check_on_time.sql", "migrations/sql/0009_roles.sql")


def downgrade() -> None:
    apply("migrations/sql/0009_first_check_on_time_down.sql", "migrations/sql/0008_roles.sql")
