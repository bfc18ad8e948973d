"""One push intent per push request instead of one per job (a row and an index entry
written and deleted for every job cost about a seventh of PostgreSQL's work per job).
The relay's grants are re-applied with migrations/sql/0009_roles.sql, unchanged since.

Revision ID: 0013
Revises: 0012
"""

from migrations.sqlfile import apply

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0013_push_intents_per_request.sql", "migrations/sql/0009_roles.sql")


def downgrade() -> None:
    apply("migrations/sql/0013_push_intents_per_request_down.sql", "migrations/sql/0009_roles.sql")
