"""The tick's UPDATE of each due monitor no longer re-runs the URL's regular expression:
PostgreSQL evaluates every CHECK constraint of a row on every UPDATE, whatever changed, and
the monitors_url_checked trigger (revision 0010) already checks a URL, in full, whenever it
is written. About a tenth of the tick's CPU.

Revision ID: 0011
Revises: 0010
"""

from migrations.sqlfile import apply

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0011_tick_writes_less.sql")


def downgrade() -> None:
    apply("migrations/sql/0011_tick_writes_less_down.sql")
