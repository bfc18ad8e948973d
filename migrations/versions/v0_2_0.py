"""Release 0.2.0, unreleased: the one revision every change until the 0.2.0 tag edits.

A branch that changes the schema edits the canonical files in sql/ and puts the same change
here: its upgrade into migrations/sql/0.2.0.sql and its exact inverse into
migrations/sql/0.2.0_down.sql; 0.2.0_roles.sql and 0.2.0_cron.sql are this release's copies
of sql/roles.sql and sql/cron.sql (kept equal to them) (the catalog comparison in tests/migrations checks that a
migrated database is the one sql/ builds). No branch adds a revision of its own. At the
tag this file and its SQL are frozen like every released revision, and the next release
gets its own unreleased revision (docs/upgrading.md, "How schema changes ship").

Revision ID: 0.2.0
Revises: 0016
"""

from migrations.sqlfile import apply

revision = "0.2.0"
down_revision = "0016"
branch_labels = None
depends_on = None


# this release's roles and pg_cron set-up: `pgpulse migrate` applies them again at head
# (migrations.sqlfile.finish), so a run after an admin fixed a missing right completes it
SETUP = ("migrations/sql/0.2.0_roles.sql", "migrations/sql/0.2.0_cron.sql")


def upgrade() -> None:
    apply("migrations/sql/0.2.0.sql", *SETUP)


def downgrade() -> None:
    apply(
        "migrations/sql/0.2.0_down.sql",
        "migrations/sql/0009_roles.sql",
        "migrations/sql/0007_cron.sql",
    )
