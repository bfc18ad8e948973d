"""A new, re-activated or re-phased monitor's first check on time (not at the next tick).

migrations/sql/0007_roles.sql is this revision's copy of sql/roles.sql (the ticker's grant
on the tick chunk's new signature).

Revision ID: 0007
Revises: 0006
"""

from migrations.sqlfile import apply

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0007_first_check_on_time.sql", "migrations/sql/0007_roles.sql")


def downgrade() -> None:
    apply("migrations/sql/0007_first_check_on_time_down.sql", "migrations/sql/0006_roles.sql")
