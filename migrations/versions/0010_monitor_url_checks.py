"""A monitor's URL is checked like a check target: malformed URLs and targets off the public
internet (loopback, link-local, private, cloud metadata) are refused on INSERT and UPDATE,
on an adopted table too; monitors that already hold one are parked until it is fixed.
pgpulse.allow_private_targets = on admits private targets.

Revision ID: 0010
Revises: 0009
"""

from migrations.sqlfile import apply

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply("migrations/sql/0010_monitor_url_checks.sql")


def downgrade() -> None:
    apply("migrations/sql/0010_monitor_url_checks_down.sql")
