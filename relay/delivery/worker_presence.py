"""Whether a region's workers are there (docs/results.md, "Regions whose workers are gone"),
judged from what the relay samples of the region (relay/scripts/sample.lua) by Redis's own
clock: heartbeats (every claim renews its worker's), when a claim last took a job, and the
slot of the oldest job waiting in the region's lists.

- A region that never had a heartbeat (version 1 consumers, or none yet) is never absent.
- Absent: the newest heartbeat is older than PGPULSE_WORKERS_ABSENT_S, or jobs have waited
  that long while no claim took one (workers that claim but never take: all stuck).
- Slow (degraded, not absent): workers take jobs, but the oldest waits that long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.delivery.queue import CRITICALITIES, queue_key
from relay.worker.protocol import (
    ALIVE_S,
    results_dropped_key,
    results_key,
    taken_key,
    workers_key,
)


def sample_keys(region: str) -> list[str]:
    """The sample script's KEYS, in its order."""
    return [
        *(queue_key(region, c) for c in CRITICALITIES),
        workers_key(region),
        taken_key(region),
        results_key(region),
        results_dropped_key(region),
    ]


@dataclass(frozen=True)
class Sample:
    """One region as sample.lua saw it (times: Redis's unix ms; -1: none, never)."""

    now_ms: int
    depth: int
    oldest_ms: int
    workers_known: int
    newest_heartbeat_ms: int
    alive: int
    taken_ms: int
    results: int
    results_dropped: int

    @classmethod
    def from_reply(cls, reply: Any) -> Sample:
        if not isinstance(reply, list) or len(reply) != 9:
            raise ValueError(f"the sample script answered {reply!r:.80}")
        return cls(*(int(v) for v in reply))


@dataclass(frozen=True)
class Verdict:
    absent: bool
    slow: bool
    reason: str  # why absent or slow, one line ("" when neither)


def judge(sample: Sample, absent_s: float) -> Verdict:
    if sample.workers_known == 0 or sample.newest_heartbeat_ms < 0:
        return Verdict(False, False, "")
    now, limit = sample.now_ms, absent_s * 1000
    silent_ms = now - sample.newest_heartbeat_ms
    if silent_ms > limit:
        return Verdict(True, False, f"no worker heartbeat for {silent_ms / 1000:.0f} s")
    waited_ms = now - sample.oldest_ms if sample.oldest_ms >= 0 else 0
    if waited_ms > limit:
        idle_ms = now - sample.taken_ms if sample.taken_ms >= 0 else None
        if idle_ms is None or idle_ms > limit:
            took = "none ever" if idle_ms is None else f"the last {idle_ms / 1000:.0f} s ago"
            return Verdict(
                True,
                False,
                f"jobs waited {waited_ms / 1000:.0f} s and no worker took one ({took})",
            )
        return Verdict(False, True, f"the oldest job waits {waited_ms / 1000:.0f} s")
    return Verdict(False, False, "")


ALIVE_MS = int(ALIVE_S * 1000)
