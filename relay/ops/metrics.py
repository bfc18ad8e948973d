"""Prometheus metrics of the relay and the tick, served at GET /metrics.

Two kinds: this process's own (counters, breaker, queue depth sampled by this relay) and
database-wide facts (backlog, ticks, dead letters) that every relay reports alike. Aggregate
the second kind with max(), never sum(): N relays report the same number N times.
"""

import bisect
import threading
from collections import defaultdict
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.core import HistogramMetricFamily

from relay import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)  # process_*, python_info, python_gc_*

Info("pgpulse_build", "pgpulse version running in this process", registry=REGISTRY).info(
    {"version": __version__}
)

_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

published = Counter(
    "pgpulse_jobs_published", "Jobs pushed to a regional queue", ["region"], registry=REGISTRY
)
duplicates = Counter(
    "pgpulse_jobs_duplicate",
    "Jobs already pushed before (dedup key existed)",
    ["region"],
    registry=REGISTRY,
)
failed = Counter(
    "pgpulse_jobs_failed",
    "Jobs whose push failed inline; requeued with a backoff",
    ["region"],
    registry=REGISTRY,
)
expired = Counter(
    "pgpulse_jobs_expired", "Jobs dropped because their slot expired", ["region"], registry=REGISTRY
)
rerouted = Counter(
    "pgpulse_jobs_rerouted",
    "Jobs delivered to a fallback region's queue",
    ["region", "to"],
    registry=REGISTRY,
)
dead_lettered = Counter(
    "pgpulse_jobs_dead_lettered",
    "Jobs moved to pgpulse.dead_letters",
    ["region"],
    registry=REGISTRY,
)
publish_retries = Counter(
    "pgpulse_publish_retries", "HTTP publish attempts retried", ["region"], registry=REGISTRY
)
publish_latency = Histogram(
    "pgpulse_publish_latency_seconds",
    "One /pipeline request",
    ["region"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BREAKER_STATES = ("closed", "half_open", "open")
breaker_state = Gauge(
    "pgpulse_breaker_state",
    "This relay's circuit breaker per region: 1 for the state it is in",
    ["region", "state"],
    registry=REGISTRY,
)
queue_depth = Gauge(
    "pgpulse_queue_depth", "Jobs waiting in a region's Redis queues", ["region"], registry=REGISTRY
)
workers_alive = Gauge(
    "pgpulse_workers_alive",
    "Workers of a region with a heartbeat within 30 s (sampled by this relay)",
    ["region"],
    registry=REGISTRY,
)
results_ingested = Counter(
    "pgpulse_results_ingested",
    "Check results this relay stored in PostgreSQL",
    ["region"],
    registry=REGISTRY,
)
results_malformed = Counter(
    "pgpulse_results_malformed",
    "Check results this relay could not store (counted and skipped; the log says why)",
    ["region"],
    registry=REGISTRY,
)
results_skipped = Counter(
    "pgpulse_results_skipped",
    "Check results not stored: reason=unknown_monitor (deleted), or not in the history: "
    "reason=outside_history (no partition covers their slot)",
    ["region", "reason"],
    registry=REGISTRY,
)
results_backlog = Gauge(
    "pgpulse_results_backlog",
    "Check results waiting in a region's results list (Redis-wide)",
    ["region"],
    registry=REGISTRY,
)
results_dropped = Gauge(
    "pgpulse_results_dropped",
    "Check results a region's results list trimmed at its cap, ever (Redis-wide: max)",
    ["region"],
    registry=REGISTRY,
)

# database-wide (aggregate with max)
outbox_backlog = Gauge(
    "pgpulse_outbox_backlog",
    "Due jobs waiting in the outbox (database-wide)",
    ["region"],
    registry=REGISTRY,
)
outbox_oldest_age = Gauge(
    "pgpulse_outbox_oldest_due_age_seconds",
    "Age of the oldest due job in the outbox (database-wide)",
    ["region"],
    registry=REGISTRY,
)
dead_letters = Gauge(
    "pgpulse_dead_letters",
    "Jobs in pgpulse.dead_letters (database-wide)",
    ["region"],
    registry=REGISTRY,
)
tick_duration = Gauge(
    "pgpulse_tick_duration_seconds", "Duration of the latest finished tick", registry=REGISTRY
)
tick_budget = Gauge(
    "pgpulse_tick_budget_seconds", "Time budget of the latest finished tick", registry=REGISTRY
)
monitors_parked = Gauge(
    "pgpulse_monitors_parked",
    "Active monitors pgpulse does not schedule: their row holds what it cannot schedule",
    registry=REGISTRY,
)
following = Gauge(
    "pgpulse_following_monitors",
    "1 while pgpulse's triggers follow the product's monitors table, 0 when one is off or gone",
    registry=REGISTRY,
)
monitors_overdue = Gauge(
    "pgpulse_monitors_overdue",
    "Active, schedulable monitors due more than 90 s ago: no tick scheduled them",
    registry=REGISTRY,
)
tick_skipped = Gauge(
    "pgpulse_tick_skipped_monitors",
    "Due monitors the latest finished tick skipped (an error on their rows)",
    registry=REGISTRY,
)
follow_pending = Gauge(
    "pgpulse_follow_pending_rows",
    "Product rows bulk writes logged that no relay or tick followed yet",
    registry=REGISTRY,
)
follow_oldest = Gauge(
    "pgpulse_follow_pending_oldest_seconds",
    "Age of the oldest product row a bulk write logged and nobody followed yet",
    registry=REGISTRY,
)
tick_unrouted = Gauge(
    "pgpulse_tick_unrouted_monitors",
    "Due monitors the latest finished tick found no region for",
    registry=REGISTRY,
)
tick_monitors = Gauge(
    "pgpulse_tick_monitors", "Monitors claimed by the latest finished tick", registry=REGISTRY
)
tick_cut_short = Gauge(
    "pgpulse_tick_cut_short", "1 if the latest finished tick ran out of budget", registry=REGISTRY
)
last_tick_finished = Gauge(
    "pgpulse_last_tick_finished_timestamp_seconds",
    "Unix time the latest tick finished (any trigger; 0: never)",
    registry=REGISTRY,
)
clock_skew = Gauge(
    "pgpulse_clock_skew_seconds",
    "How far a clock is ahead of PostgreSQL's (negative: behind): clock=host (this process's"
    " host), clock=redis (a region's Redis, which judges job expiry); measured once a minute",
    ["clock", "region"],
    registry=REGISTRY,
)
clock_skew_uncertainty = Gauge(
    "pgpulse_clock_skew_uncertainty_seconds",
    "pgpulse_clock_skew_seconds is right within this (half the round trips of the reading)",
    ["clock", "region"],
    registry=REGISTRY,
)
clock_skew_warn = Gauge(
    "pgpulse_clock_skew_warn_seconds",
    "PGPULSE_CLOCK_SKEW_WARN_S: a clock skew past this is worth a warning",
    registry=REGISTRY,
)
vacuum_held_back = Gauge(
    "pgpulse_vacuum_held_back_seconds",
    "How long the oldest transaction, prepared transaction or replication slot of this"
    " database has held back vacuum of pgpulse's tables (0: nothing holds it); another role's"
    " session is timed from when this relay first saw it (database-wide)",
    registry=REGISTRY,
)
vacuum_held_back_xids = Gauge(
    "pgpulse_vacuum_held_back_xids",
    "Age in transactions of the oldest transaction id vacuum must keep rows for (database-wide)",
    registry=REGISTRY,
)
dead_tuples = Gauge(
    "pgpulse_dead_tuples",
    "Dead rows of a pgpulse table, as PostgreSQL's statistics count them (database-wide)",
    ["table"],
    registry=REGISTRY,
)
region_workers_absent = Gauge(
    "pgpulse_region_workers_absent",
    "1 while a region's workers are absent (it had heartbeats and has none, or they take "
    "no job): its monitors that may fall back go elsewhere (database-wide)",
    ["region"],
    registry=REGISTRY,
)
facts_ok = Gauge(
    "pgpulse_database_up",
    "1 if this process read the database-wide facts on its latest try",
    registry=REGISTRY,
)


class BatchHistogram:
    """A labelled histogram observed a whole batch at a time: prometheus_client's
    observe() costs microseconds per call, too much at tens of thousands of jobs a second."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.buckets = name, documentation, buckets
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(buckets) + 1))
        self._sums: dict[str, float] = defaultdict(float)

    def observe_many(self, label: str, values: list[float]) -> None:
        local = [0] * (len(self.buckets) + 1)
        for value in values:
            local[bisect.bisect_left(self.buckets, value)] += 1
        with self._lock:
            counts = self._counts[label]
            for i, n in enumerate(local):
                counts[i] += n
            self._sums[label] += sum(values)

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=["region"])
        with self._lock:
            for label, counts in self._counts.items():
                cumulative, running = [], 0
                for bound, n in zip((*map(str, self.buckets), "+Inf"), counts):
                    running += n
                    cumulative.append((bound, running))
                family.add_metric([label], cumulative, self._sums[label])
        yield family


schedule_lag = BatchHistogram(
    "pgpulse_schedule_lag_seconds", "published_at - scheduled_for", _LAG_BUCKETS
)
REGISTRY.register(schedule_lag)


BREAKERS: dict[str, str] = {}  # region -> this process's breaker state, for the status page


def set_breaker(region: str, state: str) -> None:
    """One series per state, 1 for the current one (the Prometheus state-set convention)."""
    BREAKERS[region] = state
    for name in BREAKER_STATES:
        breaker_state.labels(region, name).set(1 if name == state else 0)


def init_region(region: str) -> None:
    """Every per-region series exists from the start at 0, so rate() and the dashboard see
    a region before its first event."""
    set_breaker(region, "closed")
    for counter in (
        published,
        duplicates,
        failed,
        expired,
        dead_lettered,
        publish_retries,
        results_ingested,
        results_malformed,
    ):
        counter.labels(region)
    for gauge in (workers_alive, results_backlog, results_dropped, region_workers_absent):
        gauge.labels(region)
    publish_latency.labels(region)
    schedule_lag.observe_many(region, [])


def publish_facts(facts: dict[str, Any]) -> None:
    """Sets the database-wide gauges from a facts snapshot (see relay.ops.facts)."""
    for row in facts["backlog"]:
        outbox_backlog.labels(row["region"]).set(row["due"])
        outbox_oldest_age.labels(row["region"]).set(float(row["oldest_due_age_s"] or 0))
    for region, count in facts.get("dead_letters", {}).items():
        dead_letters.labels(region).set(count)
    for row in facts.get("regions") or []:
        region_workers_absent.labels(row["code"]).set(1 if row.get("workers_absent") else 0)
    health = facts.get("schedule")
    if health:
        monitors_parked.set(health["parked"])
        following.set(1 if (health.get("following") or {}).get("ok", True) else 0)
        monitors_overdue.set(health["overdue"])
        tick_skipped.set(health["skipped"])
        tick_unrouted.set(health["unrouted"])
        follow_pending.set(health.get("follow_pending") or 0)
        follow_oldest.set(health.get("follow_oldest_s") or 0)
    if "vacuum" in facts:
        horizon = facts["vacuum"] or {}
        vacuum_held_back.set(horizon.get("held_s") or 0)
        vacuum_held_back_xids.set(horizon.get("xid_age") or 0)
    for table, dead in (facts.get("dead_tuples") or {}).items():
        dead_tuples.labels(table).set(dead)
    tick = facts.get("latest_finished_tick")
    if tick:
        tick_duration.set(tick["duration_s"] or 0)
        tick_budget.set((tick["budget_ms"] or 0) / 1000)
        tick_monitors.set(tick["monitors_claimed"])
        tick_cut_short.set(1 if tick["cut_short"] else 0)
        last_tick_finished.set(tick["finished_at"].timestamp())
