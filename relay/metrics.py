"""Prometheus metrics of the relay and the tick, served at GET /metrics."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
schedule_lag = Histogram("pgpulse_schedule_lag_seconds", "published_at - scheduled_for",
                         ["region"], registry=REGISTRY, buckets=_LAG_BUCKETS)
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
