"""Exponential backoff with jitter, written once (on tenacity's exponential wait), and a
sleep that a stop event cuts short. Each caller names its own policy and constants."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

from tenacity import wait_exponential
from tenacity.wait import wait_base


@dataclass(frozen=True)
class _Attempt:
    """The one field of tenacity's RetryCallState that its exponential wait reads."""

    attempt_number: int


class Backoff(wait_base):
    """Waits `first`, then twice as long after each further failure, at most `most` seconds;
    each wait scaled by a random factor in [1 - jitter, 1 + jitter] so that many retries
    do not fall due together. Also a tenacity wait: `AsyncRetrying(wait=policy)`."""

    def __init__(
        self, first: float, most: float, jitter: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction of the wait: 0 <= jitter < 1")
        self.first, self.most, self.jitter = first, most, jitter
        self._exponential = wait_exponential(multiplier=first, max=most)
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1 for the first failure)."""
        wait = self._exponential(_Attempt(max(attempt, 1)))  # type: ignore[arg-type]  # duck
        if self.jitter:
            wait *= self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        return wait

    def __call__(self, retry_state) -> float:
        return self.delay(retry_state.attempt_number)

    def __repr__(self) -> str:
        return f"Backoff(first={self.first}, most={self.most}, jitter={self.jitter})"


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps `seconds`, or less should `stop` be set meanwhile; True when it was."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    return stop.is_set()
