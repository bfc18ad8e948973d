"""The one backoff helper: delays, cap, jitter, as a tenacity wait; the callers' policies."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from tenacity import AsyncRetrying, stop_after_attempt

from relay.backoff import Backoff, sleep_unless_stopped
from relay.config import OpsSettings
from relay.delivery.outbox import JOB_RETRY, retry_backoff_s
from relay.ops import alerts
from relay.ops.alerts import Alerter, Finding


def test_doubles_from_first_up_to_most():
    policy = Backoff(first=1.0, most=60.0)
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(10_000) == 60  # no overflow however many failures
    assert policy.delay(0) == 1  # "no failure yet" waits like the first


def test_jitter_stays_within_its_fraction_and_follows_the_random_source():
    policy = Backoff(first=10.0, most=10.0, jitter=0.2, rng=random.Random(3))
    waits = [policy.delay(1) for _ in range(500)]
    assert 8.0 <= min(waits) < 8.2 and 11.8 < max(waits) <= 12.0
    again = Backoff(first=10.0, most=10.0, jitter=0.2, rng=random.Random(3))
    assert [again.delay(1) for _ in range(500)] == waits
    with pytest.raises(ValueError):
        Backoff(first=1.0, most=2.0, jitter=1.0)


def test_job_retry_is_the_former_formula():
    """min(0.5 * 2 ** attempts, 60) s, scaled by 0.8..1.2 (attempts: 1 after the first failure)."""
    for attempts in (1, 2, 5, 7, 8, 30):
        waits = [retry_backoff_s(attempts) for _ in range(50)]
        base = min(0.5 * 2**attempts, 60)
        assert all(0.8 * base <= w <= 1.2 * base for w in waits), attempts
    assert JOB_RETRY.most == 60


async def test_is_a_tenacity_wait():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionError("down")
        return "up"

    retrying = AsyncRetrying(
        stop=stop_after_attempt(5), wait=Backoff(first=0.2, most=0.5), sleep=sleep, reraise=True
    )
    assert await retrying(flaky) == "up"
    assert slept == [0.2, 0.4, 0.5]


async def test_sleep_unless_stopped_returns_when_stopped():
    stop = asyncio.Event()
    assert await sleep_unless_stopped(stop, 0) is False
    stop.set()
    assert await sleep_unless_stopped(stop, 3600) is True  # at once, not in an hour


async def test_alert_webhook_is_tried_three_times_then_logged(monkeypatch, caplog):
    monkeypatch.setattr(alerts, "WEBHOOK_RETRY", Backoff(first=0.0, most=0.0))
    answers = iter([503, 502, 500])
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(next(answers))

    alerter = Alerter(OpsSettings(alert_webhook_url="http://hooks.invalid/x"))
    alerter._http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    try:
        await alerter.update([Finding("deadman", "deadman", "no tick", {})])
    finally:
        await alerter.aclose()
    assert len(seen) == 3
    assert "alert_webhook_failed" in [r.getMessage() for r in caplog.records]
