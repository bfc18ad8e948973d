"""`pgpulse bench devserver` on a small N: the EVALSHA figure measures the relay's own push
script (relay/delivery/queue.py), not a copy of it, and every push landed (the benchmark fails
otherwise)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from relay.bench.devserver import bench_devserver
from relay.delivery.queue import PUSH_SCRIPT

pytestmark = pytest.mark.slow  # a benchmark


def test_evalsha_figure_measures_the_relays_push_script() -> None:
    record = asyncio.run(bench_devserver(n_commands=2000, batch=500, concurrency=2, runs=1))
    assert record["evalsha_script_sha1"] == hashlib.sha1(PUSH_SCRIPT.encode()).hexdigest()
    assert record["evalsha_push_per_s"] > 0 and record["lpush_per_s"] > 0
