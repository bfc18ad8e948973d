"""`pgpulse bench follow` on a small N: every statement ran on both tables (the product's
rows reached pgpulse's schedule), and product writes went on while a tick ran."""

from __future__ import annotations

import pytest

from relay.bench.follow import CASES, bench_follow

pytestmark = pytest.mark.slow  # a benchmark


def test_follow_bench_measures_both_tables_and_writes_during_a_tick() -> None:
    record = bench_follow(rows=2000, runs=1)
    for case in CASES:
        assert record[case]["bare_us_per_row"] > 0 and record[case]["followed_us_per_row"] > 0
    # following costs something: the schedule rows were written
    assert record["insert"]["ratio"] > 1
    for kind in ("bare", "followed"):
        assert record["single_insert_idle"][kind]["count"] == 500
        assert record["single_insert_during_tick"][kind]["count"] >= 1
