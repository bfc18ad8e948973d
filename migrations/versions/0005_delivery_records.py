"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

Revision ID: 0005
Revises: 0004
"""

from migrations.sqlfile import apply

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0005_delivery_records.sql")


def downgrade() -> None:
    apply("migrations/sql/0005_delivery_records_down.sql")
