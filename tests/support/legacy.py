"""Populated installs of the unreleased revisions before 0.2.0 (0001 and 0016, created by
pgpulse or adopted), as tests/migrations/fixtures/make_legacy_dumps.py dumped them."""

from __future__ import annotations

import subprocess

from relay.local.embedded import EmbeddedPostgres
from tests.support.cli import ROOT

FIXTURES = ROOT / "tests" / "migrations" / "fixtures"


def load_legacy(server: EmbeddedPostgres, dsn: str, fixture: str) -> None:
    """Loads fixture (e.g. "created_0016") into the empty database dsn."""
    subprocess.run(
        [
            str(server.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            dsn,
            "-f",
            str(FIXTURES / f"{fixture}.sql"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
