"""`pgpulse bench first-check` as an operator runs it, small: 2,000 minute monitors, one run
of one minute under pg_cron (the real `pgpulse-tick` job; a minute is the least it takes).
Monitors created, re-activated and re-phased at random moments of that minute get their
first job at its slot, not from the next tick; every job reached Redis exactly once (the
benchmark fails otherwise). The bench runs beside the other tests that wait for pg_cron's
minute (tests/support/cron_minute.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest

from tests.support.cli import ROOT, clean_env
from tests.support.cron_minute import Scenario

pytestmark = pytest.mark.slow  # a benchmark


class FirstCheckBench(Scenario):
    """The bench's process, started; its output in files (a pipe could fill and stall it)."""

    def arrange(self) -> None:
        self.stdout = self.resources.enter_context(tempfile.TemporaryFile("w+"))
        self.stderr = self.resources.enter_context(tempfile.TemporaryFile("w+"))
        args = ["bench", "first-check", "--monitors", "2000", "--runs", "1", "--json"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", *args],
            env=clean_env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self.stderr,
            text=True,
        )
        self.resources.callback(self.stop)

    def stop(self) -> None:
        if self.proc.poll() is None:  # a failed or interrupted test: its stack goes too
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def result(self, timeout: float) -> subprocess.CompletedProcess:
        self.proc.wait(timeout=self.left(timeout))
        self.stdout.seek(0)
        self.stderr.seek(0)
        return subprocess.CompletedProcess(
            self.proc.args, self.proc.returncode, self.stdout.read(), self.stderr.read()
        )


@pytest.mark.slow
@pytest.mark.cron_minute(scenario=FirstCheckBench)
def test_bench_first_check_under_pg_cron(cron_minute) -> None:
    result = cron_minute.result(timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["bench"] == "first_check" and record["monitors"] == 2000
    # pg_cron ran the tick within the minute measured
    assert record["cron_ticks"] == 1 and record["cron_ticks_cut_short"] == 0
    assert record["first_slots"] == 60
    assert set(record["first_slot_late_max_ms_by_kind"]) == {"created", "reactivated", "rephased"}
    # a first slot left to the next tick is up to a minute late (tens of seconds for many
    # of these); on time, it is late only by the relay's own delay
    assert record["first_slot_late_max_ms"] < 15_000
    # each minute monitor has its one slot of the minute (20 were re-phased), plus the
    # slots of the changed ones; none published before its slot
    assert record["jobs"] >= 1980
    assert record["jobs_early"] == 0
    assert 0 <= record["jobs_within_50ms_pct"] <= record["jobs_within_250ms_pct"] <= 100
