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
