"""The `pgpulse` command as an operator runs it: a subprocess of this checkout's code, in an
environment that holds none of the machine's pgpulse, Upstash or libpq settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NOT_INHERITED = ("UPSTASH_", "PGPULSE_", "PG", "CRON_SECRET", "DATABASE_URL")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without the settings a run could pick up by accident,
    with this checkout importable, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env | settings


def run_module(
    module: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess:
    """`python -m module args` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=clean_env() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pgpulse(
    *args: str,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess:
    """`pgpulse args` to its end; `env` is the whole environment (default `clean_env()`),
    `database_url` sets DATABASE_URL in it."""
    env = clean_env() if env is None else dict(env)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return run_module("relay", *args, env=env, timeout=timeout, cwd=cwd)


def assert_one_line_error(
    result: subprocess.CompletedProcess, fragment: str = "", *, command: str | None = None
) -> str:
    """It failed, and one plain line says what is wrong (anything else on stderr is a JSON
    log line); `command`: the line is pgpulse's own `pgpulse <command>: error: ...`.
    Returns the line."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    if command is not None:
        assert lines[0].startswith(f"pgpulse {command}: error: "), lines[0]
    return lines[0]
