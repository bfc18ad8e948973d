"""A per-region circuit breaker: closed → open after sustained failures → half-open probe."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


@dataclass(eq=False)  # a token: compared by identity
class Pass:
    """Leave to send requests to the region. A probe pass is the half-open probe: give it
    back with release() when it ended without reaching the region."""

    probe: bool


_CLOSED = Pass(probe=False)


class CircuitBreaker:
    """Opens after `threshold` consecutive failed attempts; after `cooldown` seconds lets one
    probe through; the probe's success closes it, its failure opens it again."""

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State, State], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.on_change = on_change
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.left_closed_at = 0.0  # start of the current incident (open/half-open spells)
        self._probe: Pass | None = None  # the half-open probe out now, until an attempt ends

    def _move(self, new: State) -> None:
        old, self.state = self.state, new
        if old is State.CLOSED and new is not State.CLOSED:
            self.left_closed_at = self.clock()
        if old is not new and self.on_change:
            self.on_change(old, new)

    def allow(self) -> Pass | None:
        """Leave to send now, or None. In half-open, one probe pass at a time."""
        if self.state is State.OPEN and self.clock() - self.opened_at >= self.cooldown:
            self._move(State.HALF_OPEN)
            self._probe = None
        if self.state is State.CLOSED:
            return _CLOSED
        if self.state is State.HALF_OPEN and self._probe is None:
            self._probe = Pass(probe=True)
            return self._probe
        return None

    def is_open(self) -> bool:
        return self.state is not State.CLOSED

    def record_success(self) -> None:
        self.failures = 0
        self._probe = None
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def record_failure(self) -> None:
        self.failures += 1
        self._probe = None
        if self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self.failures >= self.threshold
        ):
            self.opened_at = self.clock()
            self._move(State.OPEN)

    def trip(self) -> None:
        """Opens now, whatever the count: for a definitive refusal such as a bad token."""
        self.failures = max(self.failures, self.threshold)
        self._probe = None
        self.opened_at = self.clock()
        self._move(State.OPEN)

    def release(self, granted: Pass) -> None:
        """The holder is done with its pass. A probe that no attempt answered (nothing to
        send, or the database failed first) frees the slot: the next caller probes."""
        if granted is self._probe:
            self._probe = None

    def open_for(self) -> float:
        """Seconds since the breaker last left closed (0 while closed), probes included."""
        return 0.0 if self.state is State.CLOSED else self.clock() - self.left_closed_at

    def seconds_until_probe(self) -> float:
        if self.state is not State.OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))
