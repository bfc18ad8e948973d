"""Check results back in PostgreSQL (docs/results.md). Workers acknowledge jobs with their
results (relay/scripts/ack.lua), which wait in a capped list per region; one relay at a time
drains a region's list in batches: take the list's tail (results_take.lua, nothing removed),
check each result, upsert the batch in one transaction, then remove it (results_done.lua).
A relay killed between the commit and the removal leaves the batch for the next one, whose
upsert of the same results changes nothing: no result is lost, none is counted twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from relay import logs
from relay.backoff import Backoff
from relay.config import REGION_CODE, RelaySettings
from relay.db import describe
from relay.delivery.outbox import HistorySpan, Outbox
from relay.delivery.outcomes import Counts
from relay.errors import PgPulseError
from relay.ops import metrics
from relay.supervisor import Supervisor
from relay.worker.protocol import Scripts, results_dropped_key, results_key

# a failed round (the region or the database): again after 0.5 s, 1 s ... at most 15 s
DRAIN_RETRY = Backoff(first=0.5, most=15.0, jitter=0.2)
MAINTAIN_EVERY_S = 300.0  # the history's partitions
ORPHANS_EVERY = 12  # maintenance rounds: the latest results of deleted monitors, hourly
ORPHANS_CHUNK = 10_000
DETAIL_MAX = 500  # characters of a result's detail kept
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ERROR_CLASS = re.compile(r"^[a-z_]{1,40}$")


def drainer_key(region: str) -> str:
    return f"pgpulse:results:{region}:drainer"


def results_keys(region: str) -> list[str]:
    """The results scripts' KEYS, in their order."""
    return [results_key(region), results_dropped_key(region), drainer_key(region)]


class Malformed(ValueError):
    """A result the relay cannot store: counted and skipped, the reason in one line."""


def id_checker(id_type: str) -> Callable[[str], bool]:
    """Whether a monitor id (text) converts to the product's id type without an error (one
    bad id must not fail its whole batch)."""
    if id_type == "uuid":
        return lambda value: bool(UUID.match(value))
    if id_type in ("bigint", "integer"):
        bits = 63 if id_type == "bigint" else 31
        return lambda value: (
            bool(re.fullmatch(r"-?[0-9]{1,19}", value)) and -(2**bits) <= int(value) < 2**bits
        )
    return lambda value: True


def _text(value: Any, what: str, most: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise Malformed(f"{what} is not a string")
    if len(value) > most:
        raise Malformed(f"{what} is longer than {most} characters")
    _storable(value, what)
    return value


def _storable(value: str, what: str) -> None:
    """PostgreSQL's text holds no NUL, and JSON text no lone surrogate."""
    if "\x00" in value:
        raise Malformed(f"{what} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{what} is not valid Unicode") from None


def _int(value: Any, what: str, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not lo <= value <= hi:
        raise Malformed(f"{what} must be a whole number from {lo} to {hi}")
    return value


_SECONDS: dict[int, str] = {}  # unix second -> its ISO text: a batch's results share few


def _instant(value: Any, what: str, *, required: bool = False) -> str | None:
    """Unix seconds -> ISO 8601 UTC text (what the table's timestamptz reads)."""
    if value is None and not required:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value < 253402300800  # 9999-12-31
    ):
        raise Malformed(f"{what} is not a time (unix seconds)")
    micros = round(value * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        text = _SECONDS[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{fraction:06d}Z"


def parse_result(item: str, checked_from: str, valid_id: Callable[[str], bool]) -> dict[str, Any]:
    """One entry of a results list (ack.lua: the job's identity and the worker's result) as
    a results_latest row; Malformed when something in it cannot be stored as it is."""
    try:
        entry = json.loads(item)
    except ValueError:
        # (the ack script splices the worker's result in as it is: one that is not JSON
        # makes the whole entry unreadable)
        raise Malformed("not JSON (a result that is not JSON, from a worker)") from None
    if not isinstance(entry, dict):
        raise Malformed("not a JSON object")
    job_id = entry.get("job_id")
    if not isinstance(job_id, str) or not UUID.match(job_id):
        raise Malformed("job_id is not a uuid")
    monitor_id = _text(entry.get("monitor_id"), "monitor_id", 200, required=True) or ""
    if not valid_id(monitor_id):
        raise Malformed(f"monitor_id {monitor_id[:40]!r} is not an id of the product's type")
    region = entry.get("region")
    if not isinstance(region, str) or not REGION_CODE.match(region):
        raise Malformed("region is not a region code")
    scheduled_for = entry.get("scheduled_for")
    if not isinstance(scheduled_for, str) or not ISO.match(scheduled_for):
        raise Malformed("scheduled_for is not an ISO 8601 UTC time")
    slot_regions = entry.get("slot_regions")
    if slot_regions is not None and (
        not isinstance(slot_regions, list)
        or not 1 <= len(slot_regions) <= 64
        or not all(isinstance(r, str) and REGION_CODE.match(r) for r in slot_regions)
    ):
        raise Malformed("slot_regions is not a list of region codes")
    result = entry.get("result")
    if not isinstance(result, dict):
        raise Malformed("no result object (none, not JSON, or over 8192 bytes)")
    ok = result.get("ok")
    if not isinstance(ok, bool):
        raise Malformed("result.ok is not true or false")
    latency = result.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool) or not isinstance(latency, (int, float)) or not 0 <= latency < 1e9
    ):
        raise Malformed("result.latency_ms is not a duration")
    error = result.get("error")
    if error is not None and (not isinstance(error, str) or not ERROR_CLASS.match(error)):
        raise Malformed("result.error is not an error class")
    detail = result.get("detail")
    if detail is not None:
        if not isinstance(detail, str):
            raise Malformed("result.detail is not a string")
        detail = detail[:DETAIL_MAX]
        _storable(detail, "result.detail")
    return {
        "monitor_id": monitor_id,
        "region": region,
        "scheduled_for": scheduled_for,
        "checked_from": checked_from,
        "job_id": job_id,
        "slot_regions": slot_regions,
        "ok": ok,
        "status": _int(result.get("status"), "result.status", 100, 599),
        "latency_ms": latency,
        "error": error,
        "detail": detail,
        "attempts": _int(result.get("attempts"), "result.attempts", 1, 1000),
        "run": _int(result.get("run"), "result.run", 1, 1000),
        "started_at": _instant(result.get("started_at"), "result.started_at"),
        "finished_at": _instant(result.get("finished_at"), "result.finished_at", required=True),
        "worker": _text(entry.get("worker"), "worker", 100),
    }


@dataclass
class Parsed:
    rows: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0
    first_problem: str | None = None


def parse_batch(items: list[str], checked_from: str, valid_id: Callable[[str], bool]) -> Parsed:
    parsed = Parsed()
    for item in items:
        try:
            parsed.rows.append(parse_result(item, checked_from, valid_id))
        except Malformed as exc:
            parsed.malformed += 1
            if parsed.first_problem is None:
                parsed.first_problem = str(exc)
    return parsed


class History:
    """The history's span as the latest pgpulse.results_maintain() gave it, shared by the
    relay's drains; None until it has run once (then no history row is written)."""

    def __init__(self) -> None:
        self.span: HistorySpan | None = None
        self.problem: str | None = None


async def maintain_results(
    store: Outbox, history: History, supervisor: Supervisor, interval_s: float = MAINTAIN_EVERY_S
) -> None:
    """Every few minutes the history's partitions (made ahead, dropped past retention), every
    hour the latest results of deleted monitors (a scan of the latest table)."""
    rounds = 0
    while not supervisor.stopping:
        await supervisor.sleep(interval_s)
        rounds += 1
        await maintain_once(store, history, orphans=rounds % ORPHANS_EVERY == 1)


async def maintain_once(store: Outbox, history: History, *, orphans: bool = True) -> None:
    try:
        span = await store.results_maintain()
        gone = await store.results_orphans(ORPHANS_CHUNK) if orphans else 0
    except psycopg.Error as exc:
        logs.warning("results_maintain_failed", error=describe(exc))
        return
    history.span = span
    if span.created or span.dropped:
        logs.event(
            "results_partitions", created=span.created, dropped=span.dropped, history=span.history
        )
    if span.problem != history.problem:
        history.problem = span.problem
        if span.problem:
            logs.warning("results_settings_invalid", problem=span.problem)
    if gone:
        logs.event("results_of_deleted_monitors", deleted=gone)


class ResultsDrain:
    """Drains one region's results list into PostgreSQL; `wake` is set when results wait
    (the region sampler sees them, relay.delivery.depth)."""

    def __init__(
        self,
        region: Any,  # relay.delivery.regions.Region
        store: Outbox,
        settings: RelaySettings,
        supervisor: Supervisor,
        counts: Counts,
        history: History,
        *,
        relay_id: str,
        once: bool = False,
    ) -> None:
        self.region = region
        self.store = store
        self.settings = settings
        self.supervisor = supervisor
        self.counts = counts
        self.history = history
        self.relay_id = relay_id
        self.once = once
        self.scripts = Scripts(region.client, region.code)
        self.keys = results_keys(region.code)
        self.batch_no = 0
        self.valid_id: Callable[[str], bool] | None = None
        self.dropped_seen: int | None = None

    async def run(self) -> None:
        region, failures = self.region, 0
        try:
            while not self.supervisor.stopping:
                try:
                    taken = await self.drain_once()
                    failures = 0
                except (PgPulseError, psycopg.Error) as exc:
                    failures += 1
                    error = describe(exc) if isinstance(exc, psycopg.Error) else str(exc)
                    logs.warning("results_drain_failed", region=region.code, error=error[:300])
                    if self.once:
                        return
                    await self.supervisor.sleep(DRAIN_RETRY.delay(failures))
                    continue
                if taken >= self.settings.results_batch:
                    continue  # more waiting
                if self.once:
                    return
                region.results_wake.clear()
                await self._wait()
        finally:
            # a write that outlives the stop (cancelled, a stopping relay's HTTP call would
            # leave the lease to hold off the next relay for PGPULSE_RESULTS_LEASE_S)
            self.supervisor.spawn_write(self._release(), f"results-release:{region.code}")

    async def _wait(self) -> None:
        wake = asyncio.ensure_future(self.region.results_wake.wait())
        stop = asyncio.ensure_future(self.supervisor.stop.wait())
        try:
            # the sampler wakes this when results wait; a slow poll covers a missed wake-up
            await asyncio.wait(
                {wake, stop},
                timeout=max(self.settings.depth_interval_s * 4, 5.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wake.cancel()
            stop.cancel()

    async def drain_once(self) -> int:
        """Takes, ingests and removes one batch; returns how many results it took (0 also
        while another relay drains the region)."""
        s, code = self.settings, self.region.code
        if self.valid_id is None:
            self.valid_id = id_checker(await self.store.results_id_type())
        if self.history.span is None:  # whether history is on is not known yet
            await maintain_once(self.store, self.history, orphans=False)
            if self.history.span is None:
                raise PgPulseError(
                    "pgpulse.results_maintain() failed (see results_maintain_failed)"
                )
        self.batch_no += 1
        batch = str(self.batch_no)
        reply = await self.scripts.call(
            "results_take",
            self.keys,
            [self.relay_id, batch, s.results_batch, int(s.results_lease_s * 1000)],
        )
        if not isinstance(reply, list) or len(reply) < 3:
            raise PgPulseError(f"region {code}: the results_take script answered {reply!r:.80}")
        held, dropped, length, items = int(reply[0]), int(reply[1]), int(reply[2]), reply[3:]
        self.note_dropped(dropped)
        metrics.results_backlog.labels(code).set(length - len(items))
        if not held or not items:
            return 0
        parsed = parse_batch([str(i) for i in items], code, self.valid_id)
        rows_json = json.dumps(parsed.rows, ensure_ascii=False, separators=(",", ":"))
        ingested = await self.store.ingest_results(
            rows_json, self.history.span, timeout_s=max(s.results_lease_s * 0.8, 0.5)
        )
        removed = await self.scripts.call(
            "results_done", self.keys, [self.relay_id, batch, len(items), dropped, 0]
        )
        self._account(len(items), parsed, ingested, int(removed))
        return len(items)

    def note_dropped(self, dropped: int) -> None:
        """The results the region's list trimmed at its cap, ever (a Redis counter)."""
        code = self.region.code
        metrics.results_dropped.labels(code).set(dropped)
        before = self.dropped_seen
        self.dropped_seen = dropped
        if before is not None and dropped > before:
            logs.warning("results_dropped", region=code, dropped=dropped - before, total=dropped)
        elif before is None and dropped:
            logs.warning("results_dropped", region=code, total=dropped)

    def _account(self, taken: int, parsed: Parsed, ingested: Any, removed: int) -> None:
        code, c = self.region.code, self.counts
        unknown = len(parsed.rows) - ingested.known
        c.results += ingested.known
        c.results_malformed += parsed.malformed
        metrics.results_ingested.labels(code).inc(ingested.known)
        if parsed.malformed:
            metrics.results_malformed.labels(code).inc(parsed.malformed)
            logs.warning(
                "results_malformed",
                region=code,
                count=parsed.malformed,
                first=parsed.first_problem,
            )
        if unknown:
            metrics.results_skipped.labels(code, "unknown_monitor").inc(unknown)
        if ingested.outside_history:
            metrics.results_skipped.labels(code, "outside_history").inc(ingested.outside_history)
        logs.event(
            "results_ingested",
            logging.DEBUG if taken < self.settings.results_batch else logging.INFO,
            region=code,
            results=ingested.known,
            malformed=parsed.malformed,
            unknown_monitor=unknown,
            latest=ingested.latest_written,
            history=ingested.history_written,
            outside_history=ingested.outside_history,
            removed=removed,
        )

    async def _release(self) -> None:
        """Stopping: the next relay need not wait for this one's lease to end."""
        try:
            await self.scripts.call("results_done", self.keys, [self.relay_id, "stop", 0, 0, 1])
        except PgPulseError:
            pass
