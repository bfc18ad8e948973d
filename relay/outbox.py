"""The outbox as the relay sees it: claimed jobs as named rows, and what becomes of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from relay.backoff import Backoff
from relay.queries import queries

# a failed job is due again after 1 s, 2 s, 4 s ... at most 60 s, each ±20%
JOB_RETRY = Backoff(first=1.0, most=60.0, jitter=0.2)


@dataclass
class Job:
    """One claimed outbox row, with the JSON the queue receives (built by the claim)."""

    job_id: str
    monitor_id: str
    region: str
    criticality: str
    scheduled_for: datetime
    deliver_at: datetime
    expires_at: datetime
    attempts: int
    payload: str
    allow_fallback: bool
    expired: bool
    pinned_to: str | None  # a region a push of this job may have reached (push_intents)
    job_json: str

    def requeue_params(self, error: str, *, attempts: int, backoff_s: float) -> dict:
        return {"job_id": self.job_id, "monitor_id": self.monitor_id, "region": self.region,
                "criticality": self.criticality, "scheduled_for": self.scheduled_for,
                "deliver_at": self.deliver_at, "expires_at": self.expires_at,
                "allow_fallback": self.allow_fallback, "payload": self.payload,
                "attempts": attempts, "error": error[:500], "backoff_s": backoff_s}


def retry_backoff_s(attempts: int) -> float:
    """Backoff before a failed job is due again (attempts: its failed attempts so far)."""
    return JOB_RETRY.delay(attempts)


async def put_back(conn, requeue: list[dict], dead: list[dict]) -> None:
    """Failed jobs back into the outbox (a later attempt) or into the dead letters."""
    q = queries()
    async with conn.cursor() as cur:
        if requeue:
            await cur.executemany(q["requeue"], requeue)
        if dead:
            await cur.executemany(q["dead_letter"], dead)
