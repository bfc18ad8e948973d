"""`pgpulse bench worker-lag` and `worker` on small sizes: they run real worker processes to
the end and report their figures (the floors are the lead's full runs, not asserted on a
busy machine)."""

from __future__ import annotations

import pytest

from relay.bench.worker import bench_worker_idle, bench_worker_lag, bench_worker_throughput

pytestmark = pytest.mark.slow  # a benchmark


def test_worker_benchmarks_run_and_report():
    lag = bench_worker_lag(rate_per_min=1200, seconds=3, target_ms=20)
    assert (lag["checks"], lag["missing"], lag["started_early"]) == (60, 0, 0)
    assert 0 <= lag["lag_p50_ms"] <= lag["lag_p99_ms"] <= lag["lag_max_ms"]

    flat_out = bench_worker_throughput(checks=400, concurrency=50, target_ms=20)
    assert flat_out["checks"] == 400
    assert flat_out["checks_per_s"] > 0 and flat_out["cpu_ms_per_check"] > 0
    assert 0 < flat_out["commands_per_check"] < 1

    idle = bench_worker_idle(seconds=1.5, idle_max_s=0.5, ramp_s=3)
    assert 1 <= idle["commands"] <= 6  # one claim per 0.5 s, give or take the edges
