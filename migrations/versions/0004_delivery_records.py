"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

Revision ID: 0004
Revises: 0003
"""

from migrations.sqlfile import apply

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0004_delivery_records.sql")


def downgrade() -> None:
    apply("migrations/sql/0004_delivery_records_down.sql")
