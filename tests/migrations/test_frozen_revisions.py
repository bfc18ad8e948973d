"""Released revisions are frozen: every file a revision applies, up or down, is its own
copy under migrations/sql/, never the live sql/ that later changes edit."""

from __future__ import annotations

import importlib
import io

from alembic import command

from relay import migrate
from tests.support.cli import ROOT


def test_every_revision_applies_only_its_own_copies(tmp_path, monkeypatch):
    # a tree with migrations/sql/ and nothing else: reading sql/... fails
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "sql").symlink_to(ROOT / "migrations" / "sql")
    config = migrate.alembic_config(None, output=io.StringIO())
    sqlfile = importlib.import_module("migrations.sqlfile")
    monkeypatch.setattr(sqlfile, "ROOT", tmp_path)
    command.upgrade(config, "head", sql=True)
    command.downgrade(config, "head:base", sql=True)
    printed = config.output_buffer.getvalue()
    assert "CREATE PROCEDURE pgpulse.tick" in printed and "DROP SCHEMA" in printed


def test_the_unreleased_revisions_copies_are_the_live_files():
    """Until its tag, the unreleased revision's copies of roles.sql and cron.sql are the
    live files: a change to one is a change to the other."""
    for name in ("roles.sql", "cron.sql"):
        copy = ROOT / "migrations" / "sql" / f"0.2.0_{name}"
        assert copy.read_text() == (ROOT / "sql" / name).read_text(), copy
