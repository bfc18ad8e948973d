"""`pgpulse bench relay-lag` waits for every job to be dealt with: a job the relay drops
because its slot's interval has passed counts too (the benchmark waited for it to be
published, for ever, on a loaded machine)."""

from __future__ import annotations

import asyncio

import pytest

from relay.bench.relay import _drain
from relay.config import RelaySettings
from relay.local.stack import LocalStack

pytestmark = pytest.mark.slow  # a benchmark

_JOBS = """
INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                            deliver_at, expires_at, payload)
SELECT gen_random_uuid(), gen_random_uuid(), 'us-east-1', 'normal', t, t, t + %s::interval,
       '{"url": "https://example.com/"}'
  FROM (SELECT now() - interval '20 seconds' AS t) s
"""


def test_an_expired_job_ends_the_wait() -> None:
    with LocalStack(("us-east-1",), pg_cron=False) as stack:
        with stack.connect() as conn:
            stack.create_regions(conn)
            conn.execute(_JOBS, ("10 seconds",))  # its next slot has begun: dropped
            conn.execute(_JOBS, ("10 minutes",))
        _, relay, lags, _ = asyncio.run(
            asyncio.wait_for(
                _drain(stack, RelaySettings(), once=False, until_published=2), timeout=60
            )
        )
    assert (relay.counts.published, relay.counts.expired) == (1, 1)
    assert len(lags) == 1
