"""pgpulse owns only schema pgpulse: public.regions becomes pgpulse.regions.

Alembic's version table moves to pgpulse.alembic_version at the same time (migrations/env.py
moves an older install's row out of public.alembic_version before any revision runs).

Revision ID: 0002
Revises: 0001
"""

from migrations.sqlfile import apply

revision = "0002"
down_revision = "0001"
branch_labels = ("pgpulse",)  # `alembic upgrade pgpulse@head` beside a host's own history
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0002_pgpulse_owns_regions.sql")


def downgrade() -> None:
    apply("migrations/sql/0002_pgpulse_owns_regions_down.sql")
