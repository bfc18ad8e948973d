"""Benchmarks: `pgpulse bench` and the figures in docs/benchmarks.md. Each starts its own
throwaway services, so figures from one run are side by side on the same machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values by rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for several runs of a benchmark: each number is the median over the runs,
    any other field is kept when every run agrees and listed per run otherwise."""
    merged: dict[str, Any] = {}
    for key, first in records[0].items():
        values = [record[key] for record in records]
        if isinstance(first, dict):
            merged[key] = median_record(values)
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            median = statistics.median(values)
            merged[key] = round(median, 3) if isinstance(median, float) else median
        else:
            merged[key] = first if all(v == first for v in values) else values
    return merged


def repeated(runs: int, bench: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A benchmark that measures one run, run `runs` times: medians, and the runs count."""
    return median_record([bench() for _ in range(runs)]) | {"runs": runs}


def summary(record: dict[str, Any]) -> str:
    """The human form of a record: its name and top-level figures on one line (a record of
    table rows: the rows)."""
    if "table_rows" in record:
        return f"rows for docs/benchmarks.md's table:\n{record['table_rows']}"
    if record.get("bench") == "soak":
        from relay.bench.soak import render_table

        return render_table(record)
    figures = ", ".join(
        f"{key} {value}"
        for key, value in record.items()
        if key != "bench" and isinstance(value, (int, float, str))
    )
    return f"bench {record.get('bench')}: {figures}"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
    }


def run_bench(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Yields one record per figure, as each finishes."""
    what = args.what
    if what in ("tick", "all"):
        from relay.bench.tick import bench_tick

        yield {
            "bench": "tick",
            **bench_tick(args.monitors or 100_000, runs=args.runs, mix=getattr(args, "mix", False)),
            "machine": machine(),
        }
    if what in ("follow", "all"):
        from relay.bench.follow import bench_follow

        yield {
            "bench": "follow",
            **bench_follow(args.monitors or 100_000, runs=args.runs),
            "machine": machine(),
        }
    if what in ("devserver", "all"):
        from relay.bench.devserver import bench_devserver

        yield {
            "bench": "devserver",
            **asyncio.run(bench_devserver(runs=args.runs)),
            "machine": machine(),
        }
    if what in ("relay", "all"):
        from relay.bench.relay import bench_relay

        latencies = [args.latency_ms] if what == "relay" else [0.0, 20.0]
        for latency in latencies:
            yield bench_relay(args.jobs, latency, runs=args.runs) | {"machine": machine()}
    if what in ("relay-lag", "all"):
        from relay.bench.relay import bench_relay_lag

        seconds = args.seconds if args.seconds is not None else 30.0
        yield repeated(
            args.runs,
            lambda: bench_relay_lag(args.rate, seconds, interval_s=getattr(args, "interval", None)),
        ) | {"machine": machine()}
    if what in ("compare", "all"):
        from relay.bench.compare import bench_compare

        cases = (
            [(args.monitors or 1000, args.latency_ms)]
            if what == "compare"
            else [(1000, 0.0), (1000, 20.0), (100_000, 0.0), (100_000, 20.0)]
        )
        for monitors, latency in cases:
            yield repeated(args.runs, lambda: bench_compare(monitors, latency)) | {
                "machine": machine()
            }
    if what in ("e2e", "all"):
        from relay.bench.e2e import bench_e2e

        yield bench_e2e(args.monitors or 100_000, runs=args.runs) | {"machine": machine()}
    if what in ("first-check", "all"):
        from relay.bench.first_check import bench_first_check

        yield bench_first_check(args.monitors or 100_000, runs=args.runs) | {"machine": machine()}
    if what in ("worker-lag", "worker", "all"):
        from relay.bench.worker import (
            bench_worker_idle,
            bench_worker_lag,
            bench_worker_throughput,
            benchmark_rows,
        )

        lag = None
        if what != "worker":  # worker: the flat-out and idle figures only
            seconds = args.seconds if args.seconds is not None else 60.0
            lag = repeated(args.runs, lambda: bench_worker_lag(args.rate_per_min, seconds))
            yield lag | {"machine": machine()}
        flat = repeated(args.runs, lambda: bench_worker_throughput(args.checks))
        yield flat | {"machine": machine()}
        idle = bench_worker_idle(args.idle_seconds)
        yield idle | {"machine": machine()}
        if lag is not None:
            yield {"bench": "worker-table", "table_rows": benchmark_rows(lag, flat, idle)}
    if what in ("results", "all"):
        from relay.bench.results import bench_results

        for record in bench_results(getattr(args, "results", 200_000), runs=args.runs):
            yield record | {"machine": machine()}
    if what == "soak":  # minutes long: never part of "all"
        from relay.bench.soak import SoakFailed, bench_soak, failures

        record = bench_soak(
            args.rate,
            args.minutes,
            hold_open_at=args.hold_open_at,
            hold_open_minutes=args.hold_open_minutes,
            out=args.out,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        ) | {"machine": machine()}
        yield record
        if not record["passed"]:
            raise SoakFailed("soak: " + "; ".join(failures(record)))
