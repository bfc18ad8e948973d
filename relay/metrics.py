"""Prometheus metrics of the relay and the tick, served at GET /metrics."""

import bisect
import threading
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

published = Counter("pgpulse_jobs_published", "Jobs pushed to a regional queue",
                    ["region"], registry=REGISTRY)
duplicates = Counter("pgpulse_jobs_duplicate", "Jobs already pushed before (dedup key existed)",
                     ["region"], registry=REGISTRY)
failed = Counter("pgpulse_jobs_failed", "Jobs whose push failed inline; requeued with a backoff",
                 ["region"], registry=REGISTRY)
expired = Counter("pgpulse_jobs_expired", "Jobs dropped because their slot expired",
                  ["region"], registry=REGISTRY)
rerouted = Counter("pgpulse_jobs_rerouted", "Jobs delivered to a fallback region's queue",
                   ["region", "to"], registry=REGISTRY)
dead_lettered = Counter("pgpulse_jobs_dead_lettered", "Jobs moved to pgpulse.dead_letters",
                        ["region"], registry=REGISTRY)
publish_retries = Counter("pgpulse_publish_retries", "HTTP publish attempts retried",
                          ["region"], registry=REGISTRY)
publish_latency = Histogram("pgpulse_publish_latency_seconds", "One /pipeline request",
                            ["region"], registry=REGISTRY,
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
breaker_state = Gauge("pgpulse_breaker_state", "0 closed, 1 half-open, 2 open",
                      ["region"], registry=REGISTRY)
queue_depth = Gauge("pgpulse_queue_depth", "Jobs waiting in a region's Redis queues",
                    ["region"], registry=REGISTRY)
outbox_backlog = Gauge("pgpulse_outbox_backlog", "Due jobs waiting in the outbox",
                       ["region"], registry=REGISTRY)
outbox_oldest_age = Gauge("pgpulse_outbox_oldest_due_age_seconds",
                          "Age of the oldest due job in the outbox", ["region"], registry=REGISTRY)
tick_duration = Gauge("pgpulse_tick_duration_seconds", "Duration of the latest tick",
                      registry=REGISTRY)
tick_monitors = Gauge("pgpulse_tick_monitors", "Monitors claimed by the latest tick",
                      registry=REGISTRY)
tick_cut_short = Gauge("pgpulse_tick_cut_short", "1 if the latest tick ran out of budget",
                       registry=REGISTRY)


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


schedule_lag = BatchHistogram("pgpulse_schedule_lag_seconds", "published_at - scheduled_for",
                              _LAG_BUCKETS)
REGISTRY.register(schedule_lag)
