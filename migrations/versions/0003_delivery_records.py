"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

Revision ID: 0003
Revises: 0002
"""

from migrations.sqlfile import apply

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0003_delivery_records.sql")


def downgrade() -> None:
    apply("migrations/sql/0003_delivery_records_down.sql")
