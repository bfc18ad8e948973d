"""Built-in alerts for teams without Alertmanager: rules evaluated on a timer, one webhook per
incident (firing, then resolved), logged too.

However many relays run, one evaluates: the holder of the lease row 'alert-evaluator' in
pgpulse.leases, which it renews every round (a row, not a session advisory lock: behind a
transaction-mode pooler nothing session-level is kept). A holder that stops renewing (killed,
frozen, cut off) loses it when it expires, 3 rounds and 2 s after its last renewal, and another
takes it; one that stops cleanly gives it up at once. While the database cannot be reached
nobody can take the lease, so the relay that held it last stays the evaluator: it reports the
outage itself and keeps running the rules that need no database (its own circuit breakers);
incidents that need the database stay as they are until it is back. A process that started
into the outage (never reached the database) reports it too: it cannot know whether an
evaluator exists. Once the database answers it resolves its outage alert and competes for
the lease like the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from tenacity import AsyncRetrying, retry_if_exception_type, retry_if_result, stop_after_attempt

from relay import logs
from relay.backoff import Backoff
from relay.config import OpsSettings
from relay.db import AsyncDictConnection, apinned
from relay.ops import metrics
from relay.ops.facts import read_facts
from relay.queries import queries

LEASE = "alert-evaluator"  # its row in pgpulse.leases
# rules that judge database facts: left alone (neither fired nor resolved) while it is down
NEEDS_DATABASE = {
    "deadman",
    "tick_budget",
    "backlog_age",
    "monitors_overdue",
    "monitors_parked",
    "tick_skipped",
    "monitors_unrouted",
    "not_following",
    "vacuum_held_back",
    "bulk_writes_not_followed",
    "workers_absent",
}
# a bulk write's rows are followed within a second by a relay, at the latest by the next tick
FOLLOW_LATE_S = 120
STATEMENT_TIMEOUT_MS = 5000  # each read of the rules' facts
# a webhook POST that fails (no answer, 5xx) is tried twice more, after 0.2 s and 0.4 s
WEBHOOK_RETRY = Backoff(first=0.2, most=0.8)


@dataclass(frozen=True)
class Finding:
    """A rule that currently fires: its key (rule plus subject) and what to say."""

    key: str
    rule: str
    summary: str
    details: dict[str, Any]


def evaluate(
    settings: OpsSettings,
    facts: dict[str, Any] | None,
    breakers_open_s: dict[str, float] | None = None,
    database_down_s: float | None = None,
) -> list[Finding]:
    """The rules. `facts` (relay.ops.facts) is None while the database cannot be read; then
    `database_down_s` says for how long. `breakers_open_s`: this relay's own breakers."""
    found: list[Finding] = []
    if facts is None:
        if database_down_s is not None and database_down_s >= settings.alert_database_down_s:
            found.append(
                Finding(
                    "database_unreachable",
                    "database_unreachable",
                    f"the database cannot be reached for {database_down_s:.0f} s",
                    {"down_s": round(database_down_s, 1)},
                )
            )
    else:
        found += _database_rules(settings, facts)
    # breakers: this relay's own, and any region another relay's breaker marked unhealthy
    open_s = dict((facts or {}).get("unhealthy_regions") or {})
    for region, seconds in (breakers_open_s or {}).items():
        open_s[region] = max(seconds, open_s.get(region) or 0.0)
    for region, seconds in sorted(open_s.items()):
        if seconds > settings.alert_breaker_open_s:
            found.append(
                Finding(
                    f"breaker_open:{region}",
                    "breaker_open",
                    f"region {region}: circuit breaker open for {seconds:.0f} s",
                    {"region": region, "open_s": round(seconds, 1)},
                )
            )
    return found


def _database_rules(settings: OpsSettings, facts: dict[str, Any]) -> list[Finding]:
    found = []
    age = facts.get("last_tick_age_s")
    if age is None or age > settings.alert_deadman_s:
        found.append(
            Finding(
                "deadman",
                "deadman",
                "no tick has finished for " + ("ever" if age is None else f"{age:.0f} s"),
                {"last_tick_age_s": age, "threshold_s": settings.alert_deadman_s},
            )
        )
    tick = facts.get("latest_tick")
    if (
        tick
        and tick.get("budget_used") is not None
        and tick["budget_used"] > settings.alert_tick_budget_ratio
    ):
        found.append(
            Finding(
                "tick_budget",
                "tick_budget",
                f"tick {tick['id']} used {tick['budget_used']:.0%} of its budget",
                {
                    "tick_id": tick["id"],
                    "budget_used": tick["budget_used"],
                    "cut_short": tick.get("cut_short"),
                },
            )
        )
    found += _schedule_rules(facts.get("schedule"))
    found += _vacuum_rules(settings, facts)
    found += _workers_rules(facts.get("absent_workers") or {})
    for row in facts.get("backlog", []):
        oldest = float(row["oldest_due_age_s"] or 0)
        if oldest > settings.alert_backlog_age_s:
            found.append(
                Finding(
                    f"backlog_age:{row['region']}",
                    "backlog_age",
                    f"region {row['region']}: oldest due job waits {oldest:.0f} s",
                    {"region": row["region"], "oldest_due_age_s": oldest, "due": row["due"]},
                )
            )
    return found


def _workers_rules(absent: dict[str, dict[str, Any]]) -> list[Finding]:
    """Regions whose workers are gone (the relay's verdict, relay.delivery.worker_presence):
    their monitors that may fall back are checked elsewhere, the others not at all."""
    return [
        Finding(
            f"workers_absent:{region}",
            "workers_absent",
            f"region {region}: no worker takes its jobs (for {seen['absent_s'] or 0:.0f} s); "
            + (
                f"its monitors that may fall back go to {seen['routed_to']}"
                if seen["routed_to"]
                else "its monitors are not checked"
            ),
            {
                "region": region,
                "absent_s": round(seen["absent_s"] or 0, 1),
                "routed_to": seen["routed_to"],
            },
        )
        for region, seen in sorted(absent.items())
    ]


def _schedule_rules(health: dict[str, Any] | None) -> list[Finding]:
    """Monitors that are due and not scheduled are never a quiet zero: overdue (no tick took
    them), parked (the product's row holds what pgpulse cannot schedule), skipped by the
    latest tick (an error on their rows), or no region could take them."""
    if not health:
        return []
    found = []
    following = health.get("following") or {}
    if following and not following["ok"]:
        found.append(
            Finding(
                "not_following",
                "not_following",
                f"{following['detail']}: product changes do not reach the schedule "
                "(`pgpulse resync` repairs it)",
                {"detail": following["detail"]},
            )
        )
    if health["overdue"]:
        found.append(
            Finding(
                "monitors_overdue",
                "monitors_overdue",
                f"{health['overdue']} active monitors are overdue by more than 90 s: "
                "no tick scheduled them",
                {"overdue": health["overdue"]},
            )
        )
    if health["parked"]:
        found.append(
            Finding(
                "monitors_parked",
                "monitors_parked",
                f"{health['parked']} active monitors are parked (not scheduled), "
                f"e.g. {health['parked_reason']}",
                {"parked": health["parked"], "reason": health["parked_reason"]},
            )
        )
    if health["skipped"]:
        found.append(
            Finding(
                "tick_skipped",
                "tick_skipped",
                f"tick {health['tick_id']} skipped {health['skipped']} monitors: "
                f"{health['skip_detail']}",
                {"tick_id": health["tick_id"], "skipped": health["skipped"]},
            )
        )
    if (health.get("follow_oldest_s") or 0) > FOLLOW_LATE_S:
        found.append(
            Finding(
                "bulk_writes_not_followed",
                "bulk_writes_not_followed",
                f"{health['follow_pending']} product rows of bulk writes not followed for "
                f"{health['follow_oldest_s']:.0f} s: no relay or tick follows them",
                {"pending": health["follow_pending"], "oldest_s": health["follow_oldest_s"]},
            )
        )
    if health["unrouted"]:
        found.append(
            Finding(
                "monitors_unrouted",
                "monitors_unrouted",
                f"{health['unrouted']} due monitors: no region can take their jobs",
                {"tick_id": health["tick_id"], "unrouted": health["unrouted"]},
            )
        )
    return found


def _vacuum_rules(settings: OpsSettings, facts: dict[str, Any]) -> list[Finding]:
    """Vacuum held back: the outbox and the schedule change every row every interval, so
    while a transaction (or a slot) holds the horizon their dead rows pile up, the claim
    and the tick read through them, and the tables grow for good."""
    horizon = facts.get("vacuum")
    if not horizon or horizon["held_s"] < settings.alert_vacuum_held_s:
        return []
    dead = facts.get("dead_tuples") or {}
    return [
        Finding(
            "vacuum_held_back",
            "vacuum_held_back",
            f"vacuum of pgpulse's tables held back for {horizon['held_s']:.0f} s by "
            f"{horizon['kind']} {horizon['holder']} ({horizon['xid_age']} transactions old); "
            f"outbox {dead.get('outbox', 0)} and schedule {dead.get('schedule', 0)} dead rows "
            "(set idle_in_transaction_session_timeout for the product's sessions)",
            {
                "kind": horizon["kind"],
                "holder": horizon["holder"],
                "held_s": round(horizon["held_s"], 1),
                "xid_age": horizon["xid_age"],
                "dead_tuples": dead,
            },
        )
    ]


def transitions(
    firing: dict[str, Finding],
    findings: list[Finding],
    keep: Callable[[Finding], bool] = lambda f: False,
) -> tuple[list[Finding], list[Finding]]:
    """What one round announces, given the incidents firing (by key) and the rules' findings:
    (new incidents to fire, in the findings' order; incidents to resolve, in the order they
    fired). An incident is announced once, however many rounds find it, and resolved once
    it is found no more, unless `keep` holds it open (a rule that cannot be judged now)."""
    current = {f.key: f for f in findings}
    fired = [finding for key, finding in current.items() if key not in firing]
    resolved = [f for key, f in firing.items() if key not in current and not keep(f)]
    return fired, resolved


class Alerter:
    """Remembers which incidents are firing; notifies on start and on resolve only."""

    def __init__(
        self,
        settings: OpsSettings,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process webhook
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.firing: dict[str, Finding] = {}
        self._http = httpx.AsyncClient(timeout=5.0, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def update(
        self, findings: list[Finding], keep: Callable[[Finding], bool] = lambda f: False
    ) -> None:
        """Fires what is new, resolves what is gone, except incidents `keep` holds open."""
        fired, resolved = transitions(self.firing, findings, keep)
        for finding in fired:
            self.firing[finding.key] = finding
            await self._notify("firing", finding)
        for finding in resolved:
            await self._notify("resolved", self.firing.pop(finding.key))

    def forget(self) -> None:
        """Another relay evaluates now: its incidents are its own to announce."""
        self.firing.clear()

    async def _notify(self, status: str, finding: Finding) -> None:
        body = {
            "source": "pgpulse",
            "status": status,
            "alert": finding.rule,
            "key": finding.key,
            "summary": finding.summary,
            "details": finding.details,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
        }
        log = logs.warning if status == "firing" else logs.event
        log(f"alert_{status}", alert=finding.rule, key=finding.key, summary=finding.summary)
        if not self.settings.alert_webhook_url:
            return
        retrying = AsyncRetrying(
            stop=stop_after_attempt(3),
            wait=WEBHOOK_RETRY,
            reraise=True,
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda response: response.status_code >= 500),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        with contextlib.suppress(httpx.TransportError):
            response: httpx.Response = await retrying(
                self._http.post, self.settings.alert_webhook_url, json=body
            )
            if response.status_code < 500:
                return
        logs.error("alert_webhook_failed", alert=finding.rule, key=finding.key)


class Evaluator:
    """One relay's part in the alerting: takes the evaluator lease when it is free, and
    evaluates the rules while it holds it (or held it last and the database is down)."""

    def __init__(
        self,
        dsn: str,
        settings: OpsSettings,
        breakers_open_s: Callable[[], dict[str, float]] = dict,
        alerter: Alerter | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings
        self.breakers_open_s = breakers_open_s
        self.alerter = alerter or Alerter(settings)
        self.conn: AsyncDictConnection | None = None
        self.leader = False  # holds the lease now, or held it when the database went
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # a holder renews every round: it keeps the lease through 3 late rounds
        self.lease_s = 3 * settings.alert_interval_s + 2
        # this process has read the database at least once; until then it cannot know of an
        # evaluator elsewhere, so it reports an outage itself (it started into one)
        self.reached = False
        self.down_since: float | None = None
        self.contend_after = 0.0  # monotonic time before which this relay does not compete
        self.last_tick_logged = None
        self.unhealthy_since: dict[str, float] = {}  # region -> monotonic time, last read

    async def step(self) -> None:
        facts = await self._read()
        if facts is None:
            metrics.facts_ok.set(0)
            if self.leader or not self.reached:
                now = time.monotonic()
                down_s = now - (self.down_since or now)  # _read set it when it failed
                await self.alerter.update(
                    evaluate(self.settings, None, self._breakers(now), down_s),
                    keep=lambda f: f.rule in NEEDS_DATABASE,
                )
            return
        metrics.facts_ok.set(1)
        self.down_since = None
        if not self.leader:
            # reachable again but another relay evaluates: close what this one opened
            outage = self.alerter.firing.pop("database_unreachable", None)
            if outage:
                await self.alerter._notify("resolved", outage)
            self.alerter.forget()
            return
        now = time.monotonic()
        self.unhealthy_since = {
            region: now - seconds for region, seconds in facts["unhealthy_regions"].items()
        }
        metrics.publish_facts(facts)
        self._log_new_tick(facts)
        await self.alerter.update(evaluate(self.settings, facts, self.breakers_open_s()))

    def _breakers(self, now: float) -> dict[str, float]:
        """While the database is down: this relay's breakers, and the regions other relays'
        breakers had marked unhealthy when it was last read (still counting)."""
        open_s = {region: now - since for region, since in self.unhealthy_since.items()}
        for region, seconds in self.breakers_open_s().items():
            open_s[region] = max(seconds, open_s.get(region, 0.0))
        return open_s

    async def _read(self) -> dict[str, Any] | None:
        """Facts when this relay holds the lease; {} when another relay does; None when the
        database cannot be reached."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=5,
                    application_name=f"pgpulse-alerts-{os.getpid()}",
                    prepare_threshold=None,
                )
                if self.down_since is not None and not self.leader:
                    # after an outage the evaluator of before reconnects first and keeps
                    # its open incidents; the others wait before they compete
                    self.contend_after = time.monotonic() + self.lease_s
            if self.leader or time.monotonic() >= self.contend_after:
                async with apinned(self.conn, statement_timeout_ms=STATEMENT_TIMEOUT_MS):
                    got = await (
                        await self.conn.execute(
                            queries()["take_lease"],
                            {"name": LEASE, "holder": self.holder, "ttl_s": self.lease_s},
                        )
                    ).fetchone()
                if got and not self.leader:
                    logs.event("alert_evaluator_elected")
                elif not got and self.leader:
                    logs.event("alert_evaluator_handed_over")
                self.leader = got is not None
            facts = {}
            if self.leader:
                async with apinned(self.conn, statement_timeout_ms=STATEMENT_TIMEOUT_MS):
                    facts = await read_facts(self.conn)
            self.reached = True
            return facts
        except (psycopg.Error, OSError) as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                logs.warning(
                    "alerts_database_unreachable", error=type(exc).__name__, evaluator=self.leader
                )
            await self._drop_connection()
            return None

    def _log_new_tick(self, facts: dict[str, Any]) -> None:
        tick = facts["latest_tick"]
        if tick and tick["finished_at"] and tick["id"] != self.last_tick_logged:
            self.last_tick_logged = tick["id"]  # pg_cron's ticks show up in the logs too
            logs.event(
                "tick_finished",
                run_id=tick["id"],
                claimed=tick["monitors_claimed"],
                jobs=tick["jobs_written"],
                seconds=round(tick["duration_s"], 3),
                cut_short=tick["cut_short"],
            )

    async def _drop_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None

    async def aclose(self) -> None:
        if self.leader and self.conn is not None and not self.conn.closed:
            # the next evaluator takes over now, not when the lease expires
            with contextlib.suppress(psycopg.Error, OSError):
                async with apinned(self.conn, statement_timeout_ms=STATEMENT_TIMEOUT_MS):
                    await self.conn.execute(
                        queries()["drop_lease"], {"name": LEASE, "holder": self.holder}
                    )
        await self._drop_connection()
        await self.alerter.aclose()


async def watch_alerts(
    dsn: str,
    settings: OpsSettings,
    stop: asyncio.Event,
    breakers_open_s: Callable[[], dict[str, float]] = dict,
) -> None:
    """Evaluates the alert rules every alert_interval_s until stop is set."""
    evaluator = Evaluator(dsn, settings, breakers_open_s)
    try:
        while not stop.is_set():
            try:
                await evaluator.step()
            except Exception as exc:  # a bug in one round must not end alerting
                logs.error("alerts_round_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.alert_interval_s)
    finally:
        await evaluator.aclose()


async def run_with_alerts(relay, dsn: str, settings: OpsSettings | None = None):
    """The relay with the alert rules beside it (no HTTP server needed)."""
    settings = settings or OpsSettings.from_env()
    alerts = asyncio.create_task(
        watch_alerts(dsn, settings, relay.stop, relay.breakers_open_s), name="alerts"
    )
    try:
        return await relay.run()
    finally:
        relay.stop.set()
        await asyncio.gather(alerts, return_exceptions=True)
