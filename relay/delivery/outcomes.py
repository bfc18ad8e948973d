"""What became of the jobs of a batch, and the relay's totals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relay import logs
from relay.delivery.outbox import Job, Retry, retry_backoff_s

# What became of one job of a batch.
PUSHED = "pushed"
DUPLICATE = "duplicate"  # pushed before (a retry after a lost answer or a crash)
EXPIRED = "expired"  # the region's clock says it expired: never published late
FAILED = "failed"  # its own error: an attempt more, or the dead letters
HELD = "held"  # the region refused the batch as a whole, or never got it: back, no attempt
WAIT = "wait"  # maybe pushed to a region that is down now: back, waits for it


@dataclass(frozen=True)
class Outcome:
    kind: str
    error: str | None = None
    unclear: bool = False  # the push may or may not have happened
    # HELD by a failed request that never ran: its error, raised again once the batch is
    # settled (a refused token opens the breaker at once)
    cause: Exception | None = field(default=None, compare=False)


@dataclass
class Settlement:
    """The jobs of a batch that go back into the outbox, and those that go to the dead
    letters. Decided once; the counters read it."""

    requeue: list[Retry] = field(default_factory=list)
    dead: list[Retry] = field(default_factory=list)


def settle(jobs: list[Job], outcomes: list[Outcome], max_attempts: int) -> Settlement:
    """Jobs that failed on their own: back with an attempt more and a backoff, or to the
    dead letters after their last allowed attempt. Jobs the region refused as a whole, or
    that wait for a region that may have them: back as they were."""
    result = Settlement()
    for job, outcome in zip(jobs, outcomes, strict=True):
        error = outcome.error or ""  # HELD and FAILED outcomes carry theirs
        if outcome.kind == HELD:
            result.requeue.append(Retry(job, error, job.attempts, 0.0))
        elif outcome.kind == WAIT:
            result.requeue.append(
                Retry(
                    job,
                    f"waits for region {job.pinned_to}, which may have it already",
                    job.attempts,
                    1.0,
                )
            )
        elif outcome.kind == FAILED:
            attempts = job.attempts + 1
            retry = Retry(job, error, attempts, retry_backoff_s(attempts))
            if attempts >= max_attempts:
                result.dead.append(retry)
                logs.warning(
                    "job_dead_lettered",
                    job_id=job.job_id,
                    region=job.region,
                    attempts=attempts,
                    error=error[:200],
                )
            else:
                result.requeue.append(retry)
    return result


@dataclass(frozen=True)
class PublishedBatch:
    """Jobs that reached a region's queues (pushed now or before), and when (time.time())."""

    region: str
    jobs: list[Job]
    published_at: float

    def lags(self) -> list[float]:
        """Seconds from each job's deliver_at to its publish."""
        return [self.published_at - job.deliver_at_s for job in self.jobs]


BatchListener = Callable[[PublishedBatch], None]


@dataclass
class Counts:
    """Totals since start, for `--once`, the benchmarks and the tests."""

    published: int = 0
    duplicates: int = 0
    failed: int = 0
    expired: int = 0
    rerouted: int = 0
    held: int = 0  # put back after the region refused a batch as a whole
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0  # HTTP attempts retried (transport errors, 5xx, timeouts)
    results: int = 0  # check results stored in PostgreSQL
    results_malformed: int = 0  # check results counted and skipped
