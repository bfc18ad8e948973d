"""The documented host install (docs/operating.md, "Running pgpulse with systemd"):
deploy/install.sh puts the wheel in a virtualenv and the units and their environment files
in place, here into a temporary root. The units as installed pass `systemd-analyze verify`
there (which also finds the programs they start), each reads its own environment file, and
the modes are the ones the docs state."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import build_parser
from tests.support.cli import ROOT

INSTALL = ROOT / "deploy/install.sh"
UNITS = ("pgpulse-relay.service", "pgpulse-tick.service", "pgpulse-tick.timer")
ENV_FILES = {"pgpulse-relay.service": "relay.env", "pgpulse-tick.service": "tick.env"}
PROGRAM = "/opt/pgpulse/venv/bin/pgpulse"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing: apt-get install systemd",
)


def install(root: Path, wheelhouse: Path, *args: str) -> subprocess.CompletedProcess:
    wheel = next(wheelhouse.glob("pgpulse-*.whl"))
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args, str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        # offline: pip takes the wheel's dependencies from the wheelhouse only
        env=os.environ
        | {
            "PYTHON": sys.executable,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheelhouse),
            "PIP_CONFIG_FILE": os.devnull,
        },
    )


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture(scope="module")
def root(wheelhouse, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("host")
    # the host's own systemd units (sysinit.target, timers.target, ...) that ours depend on
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    done = install(root, wheelhouse)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("pgpulse 0.")  # the installed program runs
    return root


@pytest.mark.slow  # installs the wheel
def test_the_installed_units_verify_and_start_what_was_installed(root):
    system = root / "etc/systemd/system"
    assert sorted(p.name for p in system.iterdir()) == sorted(UNITS)
    result = verify(root, *UNITS)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr

    for unit in UNITS[:2]:
        lines = (system / unit).read_text().splitlines()
        [exec_start] = [line.removeprefix("ExecStart=") for line in lines if "ExecStart=" in line]
        program, *args = shlex.split(exec_start)
        assert program == PROGRAM and os.access(root / program.lstrip("/"), os.X_OK)
        build_parser().parse_args(args)  # SystemExit on an option pgpulse does not know
        assert not any("token" in a.lower() or "secret" in a.lower() for a in args)
        # each unit its own environment file (the tick's holds the ticker's role), its own user
        assert f"EnvironmentFile=/etc/pgpulse/{ENV_FILES[unit]}" in lines
        assert "DynamicUser=yes" in lines

    # the same check notices a broken unit, and a program that is not there
    relay = system / "pgpulse-relay.service"
    shipped = relay.read_text()
    try:
        relay.write_text(shipped.replace("Type=exec", "Type=sometimes"))
        assert "Failed to parse service type" in verify(root, relay.name).stderr
        relay.write_text(shipped.replace(PROGRAM, PROGRAM + "-gone"))
        assert "is not executable" in verify(root, relay.name).stderr
    finally:
        relay.write_text(shipped)


@pytest.mark.slow  # installs the wheel
def test_environment_files_are_root_s_alone_as_the_docs_say(root, wheelhouse):
    etc = root / "etc/pgpulse"
    assert mode(etc) == "0o700"
    for name in ENV_FILES.values():
        assert mode(etc / name) == "0o600"
    assert "pgpulse_ticker" in (etc / "tick.env").read_text()
    assert "pgpulse_relay" in (etc / "relay.env").read_text()

    # the docs' section and the shipped files state that one mode, no other
    operating = (ROOT / "docs/operating.md").read_text()
    section = operating[operating.index("## Running pgpulse with systemd") :].split("\n## ")[0]
    stated = [
        (name, m)
        for name, text in [
            ("docs/operating.md", section),
            *((p.name, p.read_text()) for p in [INSTALL, *(ROOT / "deploy/systemd").iterdir()]),
        ]
        for m in re.findall(r"(?<!UMask=)\b0[0-7]{3}\b", text)
    ]
    assert ("docs/operating.md", "0600") in stated
    assert {m for _, m in stated} <= {"0600", "0700", "0755", "0644"}, stated

    # an upgrade keeps what the admin wrote, and puts a loosened mode back
    (etc / "relay.env").write_text("DATABASE_URL=postgresql://relay_app:s3cret@db/app\n")
    (etc / "relay.env").chmod(0o644)
    done = install(root, wheelhouse)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (etc / "relay.env").read_text() == "DATABASE_URL=postgresql://relay_app:s3cret@db/app\n"
    assert mode(etc / "relay.env") == "0o600"


def test_bad_arguments_get_one_line(tmp_path):
    for args, message in (
        ([], "name the wheel to install"),
        ([str(tmp_path / "missing.whl")], "no wheel at"),
        (["--bogus"], "unknown option --bogus"),
    ):
        done = subprocess.run(
            ["bash", str(INSTALL), "--root", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1 and message in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1
