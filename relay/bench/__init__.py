"""Benchmarks: `pgpulse bench` and the figures in the README. Each starts its own
throwaway services, so figures from one run are side by side on the same machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from collections.abc import Iterator
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values by rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(terse=True)}


def run_bench(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Yields one record per figure, as each finishes."""
    what = args.what
    if what in ("tick", "all"):
        from relay.bench.tick import bench_tick
        yield {"bench": "tick", **bench_tick(args.monitors or 100_000, runs=args.runs),
               "machine": machine()}
    if what in ("devserver", "all"):
        from relay.bench.devserver import bench_devserver
        yield {"bench": "devserver", **asyncio.run(bench_devserver()), "machine": machine()}
    if what in ("relay", "all"):
        from relay.bench.relay import bench_relay
        latencies = [args.latency_ms] if what == "relay" else [0.0, 20.0]
        for latency in latencies:
            yield bench_relay(args.jobs, latency, runs=args.runs) | {"machine": machine()}
    if what in ("relay-lag", "all"):
        from relay.bench.relay import bench_relay_lag
        yield bench_relay_lag(args.rate, args.seconds) | {"machine": machine()}
    if what in ("compare", "all"):
        from relay.bench.compare import bench_compare
        cases = ([(args.monitors or 1000, args.latency_ms)] if what == "compare" else
                 [(1000, 0.0), (1000, 20.0), (100_000, 0.0), (100_000, 20.0)])
        for monitors, latency in cases:
            yield bench_compare(monitors, latency) | {"machine": machine()}
    if what in ("e2e", "all"):
        from relay.bench.e2e import bench_e2e
        yield bench_e2e(args.monitors or 100_000, runs=args.runs) | {"machine": machine()}
