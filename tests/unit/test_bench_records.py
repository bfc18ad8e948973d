"""How `pgpulse bench --runs N` folds N runs of a benchmark into one record."""

from relay.bench import median_record, summary


def test_numbers_are_medians_and_other_fields_kept_or_listed() -> None:
    runs = [
        {"bench": "x", "p99": 9.0, "jobs": 10, "ok": True, "mode": "a", "cpu": {"pg": 1.0}},
        {"bench": "x", "p99": 1.0, "jobs": 30, "ok": True, "mode": "b", "cpu": {"pg": 3.0}},
        {"bench": "x", "p99": 5.0, "jobs": 20, "ok": False, "mode": "a", "cpu": {"pg": 2.0}},
    ]
    merged = median_record(runs)
    assert merged == {
        "bench": "x",
        "p99": 5.0,
        "jobs": 20,
        "ok": [True, True, False],
        "mode": ["a", "b", "a"],
        "cpu": {"pg": 2.0},
    }


def test_summary_is_one_line_of_top_level_figures() -> None:
    line = summary(
        {
            "bench": "tick",
            "monitors": 100,
            "seconds_median": 1.5,
            "seconds_all": [1.4, 1.5],
            "machine": {"cpus": 2},
        }
    )
    assert line == "bench tick: monitors 100, seconds_median 1.5"


def test_the_worker_benchmarks_end_with_rows_for_the_benchmarks_table() -> None:
    from relay.bench.worker import benchmark_rows

    lag = {
        "rate_per_min": 10_000.0,
        "seconds": 60.0,
        "target_ms": 50.0,
        "checks": 10_000,
        "missing": 0,
        "lag_p50_ms": 41.2,
        "lag_p99_ms": 180.5,
        "lag_max_ms": 240.0,
        "started_early": 0,
        "checks_per_s_per_worker": 55.6,
        "worker_cpu_ms_per_check": 2.1,
        "commands_per_check": 1.7,
        "relay_commands_per_check": 1.0,
        "worker_commands_per_check": 0.7,
    }
    flat = {
        "checks": 20_000,
        "concurrency": 200,
        "target_ms": 50.0,
        "checks_per_s": 601.5,
        "cpu_ms_per_check": 1.6,
        "commands": 520,
        "commands_per_check": 0.026,
    }
    idle = {"seconds": 60.0, "idle_max_s": 3.0, "commands": 20, "commands_per_day": 28_800}
    rows = benchmark_rows(lag, flat, idle).splitlines()
    assert len(rows) == 3 and all(r.startswith("| ") and r.count(" | ") == 3 for r in rows)
    assert "10,000 checks a minute over three regions for 60 s" in rows[0]
    assert "**p50 41.2 ms, p99 180.5 ms**, max 240 ms, none early of 10,000" in rows[0]
    assert "(relay 1, workers 0.7)" in rows[0]
    assert "--rate-per-min 10000 --seconds 60 --checks 20000 --idle-seconds 60 --json" in rows[0]
    assert "**601.5 checks/s**" in rows[1] and "**0.026 commands per check**" in rows[1]
    assert "**28,800 a day** (20 in 60 s)" in rows[2]
    late = benchmark_rows(lag | {"started_early": 3, "missing": 2}, flat, idle)
    assert "3 early, 2 missing of 10,000" in late
    assert summary({"bench": "worker-table", "table_rows": "| a | b |"}).endswith("| a | b |")
