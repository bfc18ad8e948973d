"""pgpulse's Alembic revisions; each only applies SQL files from migrations/sql/.

Released revisions are frozen. Until 0.2.0 is tagged, every schema change goes into the one
unreleased revision, versions/v0_2_0.py (revision id `0.2.0`): the upgrade appended to
sql/0.2.0.sql, its inverse prepended to sql/0.2.0_down.sql, and the same change made in the
canonical sql/ at the top. Never add a revision per change (docs/upgrading.md)."""
