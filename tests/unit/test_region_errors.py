"""Which inline errors of a /pipeline answer make it a region failure (relay.upstash)."""

import pytest

from relay.upstash import is_region_error, region_failure


@pytest.mark.parametrize(
    "error",
    [
        "ERR DB capacity quota exceeded",
        "ERR max requests limit exceeded",
        "ERR max concurrent connections exceeded",
        "ERR max request size exceeded. Limit: 10485760 bytes, Actual: 10485761 bytes",
        "ERR max single record size exceeded",
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'. script: 0d4..., on @user_script:9.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
    ],
)
def test_database_and_request_errors_concern_the_region(error):
    assert is_region_error(error)
    assert region_failure([{"result": 1}, {"error": error}, {"result": 0}]) == error


@pytest.mark.parametrize(
    "error",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR injected for the test",
        "NOSCRIPT No matching script. Please use EVAL.",
        "ERR oom-like text in a job's own error",
    ],
)
def test_other_errors_concern_their_job(error):
    assert not is_region_error(error)
    assert region_failure([{"result": 1}, {"error": error}, {"result": 1}]) is None


def test_most_of_a_pipeline_failing_is_a_region_failure_from_three_commands():
    failing = [{"error": "ERR something new"}] * 2 + [{"result": 1}]
    assert region_failure(failing) == "2 of 3 commands failed: ERR something new"
    assert region_failure([{"error": "ERR x"}, {"error": "ERR x"}]) is None  # too few to tell
    assert region_failure([{"error": "ERR x"}] * 2 + [{"result": 1}] * 2) is None  # half
    assert region_failure([{"error": "NOSCRIPT No matching script"}] * 3) is None  # reloaded
