"""Several regions per slot (check_regions) and intervals in seconds (check_interval_seconds).

Revision ID: 0003
Revises: 0002
"""

from migrations.sqlfile import apply

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0003_multi_region_subminute.sql")


def downgrade() -> None:
    apply("migrations/sql/0003_multi_region_subminute_down.sql")
