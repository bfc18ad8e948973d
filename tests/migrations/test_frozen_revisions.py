"""The unreleased revision's SQL is what `python -m migrations.freeze` makes of sql/, and a
released revision's files never change (migrations/released.json). No database: these run in
the check lane."""

from __future__ import annotations

import importlib
import io
import json
import shutil

import pytest
from alembic import command

from migrations import freeze, released
from relay import migrate
from tests.support.cli import ROOT

pytestmark = pytest.mark.check


def test_the_unreleased_revisions_sql_is_what_freeze_makes_of_sql():
    if freeze.REVISION in released.released():
        pytest.skip(f"{freeze.REVISION} is released: its files are frozen")
    stale = [
        name
        for name, text in freeze.frozen().items()
        if (ROOT / "migrations" / "sql" / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run `python -m migrations.freeze` (or `make freeze`) and commit"


def test_the_statement_splitter_keeps_bodies_whole():
    script = (
        "-- a comment; with a semicolon\nCREATE FUNCTION f() RETURNS int LANGUAGE sql\n"
        "BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;\n"
        "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $$ SELECT ';' $$;\n"
        "SELECT 'it''s; fine', \"odd;name\";"
    )
    parts = [p.strip() for p in freeze.statements(script)]
    assert len(parts) == 3, parts
    assert parts[0].endswith("SELECT 2; END;") and parts[2].startswith("SELECT 'it''s")


def test_released_revisions_are_unchanged():
    assert released.edited() == [], "a released revision's files changed: make a new revision"


def test_an_edit_of_a_released_revision_is_found(tmp_path):
    """The manifest check can fail: 0.2.0 recorded in a copy, then one file edited."""
    for folder in ("versions", "sql", "legacy"):
        shutil.copytree(ROOT / "migrations" / folder, tmp_path / "migrations" / folder)
    manifest = tmp_path / "released.json"
    manifest.write_text(json.dumps({"0.2.0": released.hashes("0.2.0", tmp_path)}))
    assert released.edited(tmp_path, manifest) == []
    assert "migrations/legacy/after.sql" in json.loads(manifest.read_text())["0.2.0"]
    schema = tmp_path / "migrations" / "sql" / "0.2.0.sql"
    schema.write_text(schema.read_text() + "\n-- one more line\n")
    assert released.edited(tmp_path, manifest) == ["0.2.0: migrations/sql/0.2.0.sql"]


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
