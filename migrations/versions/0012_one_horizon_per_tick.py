"""One horizon per tick: every chunk of a tick writes the slots up to the tick's start plus
its lookahead. The horizon used to move on with each chunk, so a long tick claimed its
sub-minute monitors again and again for their next slot (28,095 claims of 20,000 ten-second
monitors on a quiet machine, 116,993 under load, where the tick then ran into its budget).

Revision ID: 0012
Revises: 0011
"""

from migrations.sqlfile import apply

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0012_one_horizon_per_tick.sql")


def downgrade() -> None:
    apply("migrations/sql/0012_one_horizon_per_tick_down.sql")
