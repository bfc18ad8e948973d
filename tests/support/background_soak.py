"""The suite's two-minute soak runs beside the other tests: `pgpulse bench soak` is started
when collection ends (when its test is selected) and its test, moved last, judges what it
left. Four minutes of mostly waiting (pg_cron's minute, warm-up, two measured minutes) then
cost the suite nothing; the soak judges exactness and sizes, which other tests' load does
not change (its lag and slopes are the long run's to judge)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import ROOT, clean_env

TEST = "test_two_minutes_at_a_steady_rate_deliver_every_slot_once_and_the_tables_stay_flat"
RATE = 200  # jobs a second: about 20,000 monitors


@dataclass
class Run:
    process: subprocess.Popen
    out: Path  # soak.json, soak.txt, soak.png, relay.log
    stdout: Path
    stderr: Path

    def wait(self, timeout: float) -> tuple[int, str, str]:
        code = self.process.wait(timeout)
        return code, self.stdout.read_text(), self.stderr.read_text()


_started: list[Run] = []


def start() -> Run:
    work = Path(tempfile.mkdtemp(prefix="pgpulse-soak-"))
    stdout, stderr = work / "stdout", work / "stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "relay", "bench", "soak", "--rate", str(RATE),
             "--minutes", "2", "--out", str(work / "soak"), "--json"],
            env=clean_env(), cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    run = Run(process, work / "soak", stdout, stderr)
    _started.append(run)
    return run


def started() -> Run | None:
    return _started[0] if _started else None


def stop_all() -> None:
    for run in _started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
