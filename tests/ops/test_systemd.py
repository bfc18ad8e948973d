"""The systemd units in deploy/systemd pass `systemd-analyze verify`, and their command lines
are ones the pgpulse CLI accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import build_parser
from tests.support.cli import ROOT

UNITS = sorted((ROOT / "deploy/systemd").iterdir())
INSTALLED = "/opt/pgpulse/.venv/bin/pgpulse"  # where the README installs it

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing"
)


def verify(folder: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[f"./{n}" for n in names]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def installed_copies(tmp_path: Path) -> list[str]:
    """The units as installed, ExecStart pointing at this checkout's pgpulse."""
    here = str(Path(sys.executable).parent / "pgpulse")
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, here))
    return [u.name for u in UNITS]


def test_units_verify_cleanly(tmp_path):
    assert {u.name for u in UNITS} == {
        "pgpulse-relay.service",
        "pgpulse-tick.service",
        "pgpulse-tick.timer",
    }
    result = verify(tmp_path, *installed_copies(tmp_path))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr

    # the same check notices a broken unit
    relay = tmp_path / "pgpulse-relay.service"
    relay.write_text(relay.read_text().replace("Type=exec", "Type=sometimes"))
    broken = verify(tmp_path, relay.name)
    assert "Failed to parse service type" in broken.stderr


def test_exec_start_lines_are_valid_pgpulse_commands():
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                program, *args = shlex.split(line.removeprefix("ExecStart="))
                assert program == INSTALLED
                build_parser().parse_args(args)  # SystemExit on an unknown option
                assert not any("token" in a.lower() or "secret" in a.lower() for a in args)
