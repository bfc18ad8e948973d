"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

migrations/sql/0008_roles.sql is this revision's copy of sql/roles.sql (the relay's grants on
the new tables, and on the monitors' routing columns).

Revision ID: 0008
Revises: 0007
"""

from migrations.sqlfile import apply

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0008_delivery_records.sql", "migrations/sql/0008_roles.sql")


def downgrade() -> None:
    apply("migrations/sql/0008_delivery_records_down.sql", "migrations/sql/0007_roles.sql")
