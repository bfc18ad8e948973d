"""Alerts for sustained trouble: evaluated on a timer, one alert per incident, a resolve
when it clears, each posted as JSON to a webhook and logged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from relay import logs
from relay.config import OpsSettings


@dataclass(frozen=True)
class Finding:
    """A rule that currently fires: its key (rule plus subject) and what to say."""

    key: str
    rule: str
    summary: str
    details: dict[str, Any]


def evaluate(settings: OpsSettings, facts: dict[str, Any]) -> list[Finding]:
    """The rules. `facts`: last_tick_age_s, latest_tick, backlog rows, breakers_open_s."""
    found: list[Finding] = []
    age = facts.get("last_tick_age_s")
    if age is None or age > settings.alert_deadman_s:
        found.append(Finding("deadman", "deadman",
                             "no tick has finished for "
                             + ("ever" if age is None else f"{age:.0f} s"),
                             {"last_tick_age_s": age, "threshold_s": settings.alert_deadman_s}))
    tick = facts.get("latest_tick")
    if tick and tick.get("budget_used") is not None \
            and tick["budget_used"] > settings.alert_tick_budget_ratio:
        found.append(Finding("tick_budget", "tick_budget",
                             f"tick {tick['id']} used {tick['budget_used']:.0%} of its budget",
                             {"tick_id": tick["id"], "budget_used": tick["budget_used"],
                              "cut_short": tick.get("cut_short")}))
    for row in facts.get("backlog", []):
        oldest = float(row["oldest_due_age_s"] or 0)
        if oldest > settings.alert_backlog_age_s:
            found.append(Finding(f"backlog_age:{row['region']}", "backlog_age",
                                 f"region {row['region']}: oldest due job waits {oldest:.0f} s",
                                 {"region": row["region"], "oldest_due_age_s": oldest,
                                  "due": row["due"]}))
    for region, open_s in facts.get("breakers_open_s", {}).items():
        if open_s > settings.alert_breaker_open_s:
            found.append(Finding(f"breaker_open:{region}", "breaker_open",
                                 f"region {region}: circuit breaker open for {open_s:.0f} s",
                                 {"region": region, "open_s": open_s}))
    return found


class Alerter:
    """Remembers which incidents are firing; notifies on start and on resolve only."""

    def __init__(self, settings: OpsSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.firing: dict[str, Finding] = {}
        self._http = httpx.AsyncClient(timeout=5.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def update(self, findings: list[Finding]) -> None:
        current = {f.key: f for f in findings}
        for key, finding in current.items():
            if key not in self.firing:
                self.firing[key] = finding
                await self._notify("firing", finding)
        for key in list(self.firing):
            if key not in current:
                await self._notify("resolved", self.firing.pop(key))

    async def _notify(self, status: str, finding: Finding) -> None:
        body = {"source": "pgpulse", "status": status, "alert": finding.rule, "key": finding.key,
                "summary": finding.summary, "details": finding.details,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))}
        log = logs.warning if status == "firing" else logs.event
        log(f"alert_{status}", alert=finding.rule, key=finding.key, summary=finding.summary)
        if not self.settings.alert_webhook_url:
            return
        for attempt in range(3):
            try:
                response = await self._http.post(self.settings.alert_webhook_url, json=body)
                if response.status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2 * 2 ** attempt)
        logs.error("alert_webhook_failed", alert=finding.rule, key=finding.key)
