"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

migrations/sql/0007_roles.sql is this revision's copy of sql/roles.sql (the relay's grants on
the new tables, and on the monitors' routing columns).

Revision ID: 0007
Revises: 0006
"""

from migrations.sqlfile import apply

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0007_delivery_records.sql", "migrations/sql/0007_roles.sql")


def downgrade() -> None:
    apply("migrations/sql/0007_delivery_records_down.sql", "migrations/sql/0006_roles.sql")
