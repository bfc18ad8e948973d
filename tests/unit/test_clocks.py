"""Clock skew arithmetic (relay.delivery.clocks) and the dev server's TIME-shift fault."""

from __future__ import annotations

import pytest

from relay.delivery.clocks import Skew, redis_seconds, skew
from relay.devserver.faults import FaultRule


def test_the_midpoint_of_the_round_trip_is_the_guess_and_half_of_it_the_uncertainty():
    # asked at 100.0, answered at 100.4 (this host's clock); the remote clock said 103.2
    found = skew(100.0, 103.2, 100.4)
    assert found.seconds == pytest.approx(3.0)
    assert found.uncertainty == pytest.approx(0.2)
    assert skew(100.0, 99.0, 100.0) == Skew(-1.0, 0.0)


def test_two_clocks_read_from_one_host_compare_with_both_uncertainties():
    redis, postgres = Skew(3.0, 0.01), Skew(-0.5, 0.002)  # both against this host
    against = redis.against(postgres)
    assert against.seconds == pytest.approx(3.5)
    assert against.uncertainty == pytest.approx(0.012)
    assert against.describe("Redis", "PostgreSQL") == (
        "Redis clock ahead of PostgreSQL by 3.500 s (±0.012 s)"
    )
    assert Skew(-0.25, 0.001).describe("database", "this host") == (
        "database clock behind this host by 0.250 s (±0.001 s)"
    )


def test_a_redis_time_reply_is_seconds_and_microseconds():
    assert redis_seconds(["1700000000", "250000"]) == 1700000000.25
    with pytest.raises(ValueError):
        redis_seconds(["1700000000"])


def test_the_time_shift_fault_moves_only_a_time_reply():
    rule = FaultRule({"time_shift_s": -1.5})
    assert rule.shift_time(["TIME"], ["1700000001", "250000"]) == ["1699999999", "750000"]
    assert rule.shift_time(["time"], [b"10", b"0"]) == [b"8", b"500000"]
    assert rule.shift_time(["GET", "TIME"], "x") == "x"
    assert FaultRule({}).shift_time(["TIME"], ["10", "0"]) == ["10", "0"]
    with pytest.raises(ValueError, match="time_shift_s"):
        FaultRule({"time_shift_s": "soon"})
