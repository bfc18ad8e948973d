"""One pg_cron minute for every test that waits for one.

pg_cron fires on the minute, so a test that waits for its next run waits up to 60 s. The
tests marked `cron_minute(scenario=...)` run together, last (tests/conftest.py orders them):
the first of them arranges every selected test's scenario (its database, rows, jobs,
processes) before the same minute boundary, then each test waits for its own runs and
asserts on them. Waits are timed from the arrangement, as they were from the test's start."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest


class Scenario:
    """What a test sets up before pg_cron's next minute. `arrange` runs in the session's
    shared set-up and enters what it makes in `resources`; they close after the test (or
    at the end of the session, whichever comes first), after a failed arrangement too."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request  # the session's: session fixtures only
        self.resources = contextlib.ExitStack()
        self.arranged_at = 0.0
        self.error: BaseException | None = None

    def arrange(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.resources.close()  # a second close finds nothing left

    def left(self, timeout: float) -> float:
        """What remains of a wait of `timeout` seconds begun when the scenario was arranged
        (never negative: a condition already met is still seen)."""
        return max(0.0, self.arranged_at + timeout - time.monotonic())


def arrange_all(request: pytest.FixtureRequest) -> dict[type[Scenario], Scenario]:
    """Every scenario of the selected tests, arranged one after another; an arrangement
    that fails is kept for its own test to raise."""
    kinds: dict[type[Scenario], None] = {}
    for item in request.session.items:
        for mark in item.iter_markers("cron_minute"):
            kinds[mark.kwargs["scenario"]] = None
    scenarios: dict[type[Scenario], Any] = {}
    for kind in kinds:
        scenario = scenarios[kind] = kind(request)
        try:
            scenario.arrange()
        except Exception as error:  # noqa: BLE001 - its test reports it
            scenario.error = error
        scenario.arranged_at = time.monotonic()
    return scenarios
