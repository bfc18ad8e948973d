"""`pgpulse bench e2e` as an operator runs it, on a small N: the figure exists, every job
reached the queues exactly once (the benchmark fails otherwise), and each component's CPU
time was read."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import pgpulse

pytestmark = pytest.mark.slow  # a benchmark


def test_bench_e2e_reports_a_median_and_cpu_per_component() -> None:
    result = pgpulse("bench", "e2e", "--monitors", "2000", "--runs", "2", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["bench"] == "e2e" and record["monitors"] == 2000 and record["runs"] == 2
    assert len(record["seconds_all"]) == 2
    assert record["seconds_median"] >= record["tick_seconds_median"] > 0
    assert abs(record["jobs_per_s_median"] * record["seconds_median"] - 2000) < 20
    assert record["tick_cut_short_runs"] == 0
    assert record["wal_bytes_per_job_median"] > 100  # an outbox row and a monitor bump at least
    # the tick's backend and the relay did real work; the names are the report's contract
    cpu = record["cpu_seconds_median"]
    assert set(cpu) == {"postgres", "relay", "devserver", "redis_server"}
    assert cpu["postgres"] > 0 and cpu["relay"] > 0
