"""A changed interval takes back the jobs written ahead for the old interval's slots still
to come (a monitor moved from 10 s to an hour was checked every 10 s for another minute).

Revision ID: 0015
Revises: 0014
"""

from migrations.sqlfile import apply

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0015_rephase_takes_back_old_slots.sql")


def downgrade() -> None:
    apply("migrations/sql/0015_rephase_takes_back_old_slots_down.sql")
