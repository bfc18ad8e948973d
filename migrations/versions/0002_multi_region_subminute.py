"""Several regions per slot (check_regions) and intervals in seconds (check_interval_seconds).

Revision ID: 0002
Revises: 0001
"""

from migrations.sqlfile import apply

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0002_multi_region_subminute.sql")


def downgrade() -> None:
    apply("migrations/sql/0002_multi_region_subminute_down.sql")
