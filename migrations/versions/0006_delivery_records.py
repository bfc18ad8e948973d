"""Delivery records: dead letters keep allow_fallback, push intents, region observations.

Revision ID: 0006
Revises: 0005
"""

from migrations.sqlfile import apply

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0006_delivery_records.sql")


def downgrade() -> None:
    apply("migrations/sql/0006_delivery_records_down.sql")
