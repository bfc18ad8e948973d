"""Release 0.2.0, unreleased: the first and only revision, from an empty database (or one
with the product's own monitors table, adopted).

Its SQL is generated from sql/ by `python -m migrations.freeze` until the tag (a check-lane
test compares them); from the tag on it is frozen, and migrations/released.json holds its
files' hashes. A database at a legacy revision (0001-0016, never released) is converted to
this one before Alembic runs (migrations.sqlfile.convert_legacy; migrations/legacy/).

Revision ID: 0.2.0
Revises:
"""

from alembic import op

from migrations.sqlfile import FOLLOW, SCHEMA, apply

revision = "0.2.0"
down_revision = None
branch_labels = ("pgpulse",)
depends_on = None


# the roles and pg_cron set-up: `pgpulse migrate` applies it after every upgrade that ends
# here (migrations.sqlfile.finish); a host's Alembic (relay.migrate.add_to_alembic) runs it
# with this revision
SETUP = ("migrations/sql/0.2.0_roles.sql", "migrations/sql/0.2.0_cron.sql")


def upgrade() -> None:
    apply(SCHEMA, FOLLOW, *SETUP)


# what sql/roles.sql granted on Alembic's version table, which outlives the downgrade: the
# roles pgpulse_monitor and pgpulse_relay would otherwise hold a right here and never be
# removed
_VERSION_TABLE_GRANT = """
DO $$
DECLARE
    v_role text;
BEGIN
    FOR v_role IN SELECT rolname FROM pg_roles
                   WHERE rolname IN ('pgpulse_monitor', 'pgpulse_relay') LOOP
        IF to_regclass('pgpulse.alembic_version') IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON pgpulse.alembic_version FROM %I', v_role);
        END IF;
    END LOOP;
END
$$;
"""


def downgrade() -> None:
    apply("migrations/sql/0.2.0_drop.sql")
    op.execute(_VERSION_TABLE_GRANT)
