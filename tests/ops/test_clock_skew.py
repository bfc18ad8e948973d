"""Clock skew between PostgreSQL, this host and each region's Redis
(relay.delivery.clocks): `pgpulse doctor` reports and judges it, a running relay exports it.
Redis's clock is moved by the dev server's time_shift_s fault (its TIME answers that far off),
so the skews here are real readings of a wrong clock, not arithmetic."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import pgpulse
from tests.support.regions import BY_CODE
from tests.support.waiting import wait_for

READING = re.compile(r"(ahead of|behind) PostgreSQL by ([0-9.]+) s \(±([0-9.]+) s\)")


def doctor_lines(env: dict[str, str]) -> dict[str, tuple[str, str]]:
    result = pgpulse("doctor", env=env)
    found = {}
    for line in result.stdout.splitlines():
        verdict, rest = line.split(None, 1)
        name, _, detail = rest.partition(": ")
        found[name] = (verdict, detail)
    return found


def reading(detail: str) -> tuple[float, float]:
    """A doctor line's skew (negative: behind) and uncertainty."""
    way, seconds, uncertainty = READING.search(detail).groups()
    return (float(seconds) if way == "ahead of" else -float(seconds)), float(uncertainty)


def test_doctor_measures_each_redis_clock_against_postgres_and_judges_it(
    regions, relay_env, devserver
):
    devserver.set_faults({"time_shift_s": 30}, tokens=[BY_CODE["eu-west-1"].token])
    devserver.set_faults({"time_shift_s": -3}, tokens=[BY_CODE["us-east-1"].token])

    checks = doctor_lines(relay_env)
    eu, us = checks["clock skew region eu-west-1"], checks["clock skew region us-east-1"]
    # 30 s ahead: every job of a monitor checked more often expires on arrival
    assert eu[0] == "FAIL" and "Redis judges job expiry" in eu[1]
    skew, uncertainty = reading(eu[1])
    assert abs(skew - 30) <= uncertainty + 0.01  # one host: the true skew is the shift
    assert us[0] == "warn"  # past PGPULSE_CLOCK_SKEW_WARN_S (2 s), short of failing
    skew, uncertainty = reading(us[1])
    assert abs(skew + 3) <= uncertainty + 0.01
    assert checks["clock skew"][0] == "ok"  # PostgreSQL and this host agree

    # the threshold is a setting
    relaxed = doctor_lines(relay_env | {"PGPULSE_CLOCK_SKEW_WARN_S": "60"})
    assert relaxed["clock skew region eu-west-1"][0] == "ok"
    assert relaxed["clock skew region us-east-1"][0] == "ok"

    devserver.clear_faults()
    checks = doctor_lines(relay_env)
    assert checks["clock skew region eu-west-1"][0] == "ok"
    assert abs(reading(checks["clock skew region eu-west-1"][1])[0]) < 1


def test_a_relay_exports_the_skew_of_each_clock_and_logs_a_wrong_one(
    regions, relay_env, devserver, start_service
):
    devserver.set_faults({"time_shift_s": 30}, tokens=[BY_CODE["eu-west-1"].token])
    service = start_service("relay", env=relay_env)

    def skews() -> dict[tuple[str, str], float]:
        text = httpx.get(service.url + "/metrics", timeout=5).text
        return {
            (s.name, s.labels.get("clock", ""), s.labels.get("region", "")): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("pgpulse_clock_skew")
        }

    wait_for(
        lambda: (
            ("pgpulse_clock_skew_seconds", "redis", "us-east-1") in skews()
            and ("pgpulse_clock_skew_seconds", "redis", "eu-west-1") in skews()
        ),
        30,
        lambda: f"no skew of both regions on /metrics: {skews()}",
    )
    found = skews()
    for clock, region, expected in (("redis", "eu-west-1", 30), ("redis", "us-east-1", 0)):
        uncertainty = found[("pgpulse_clock_skew_uncertainty_seconds", clock, region)]
        assert abs(found[("pgpulse_clock_skew_seconds", clock, region)] - expected) <= (
            uncertainty + 0.01
        ), (clock, region, found)
    host = found[("pgpulse_clock_skew_seconds", "host", "")]
    assert abs(host) <= found[("pgpulse_clock_skew_uncertainty_seconds", "host", "")] + 0.01
    assert found[("pgpulse_clock_skew_warn_seconds", "", "")] == 2.0
    wait_for(
        lambda: service.has_event("clock_skew", clock="redis", region="eu-west-1"),
        10,
        "the relay logs no clock_skew warning for eu-west-1",
    )
    assert not service.has_event("clock_skew", region="us-east-1")
