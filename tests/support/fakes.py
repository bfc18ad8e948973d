"""Fakes at the relay's seams, for unit tests of its decisions: a region's HTTP client and
the outbox store. Behaviour against the real services is tested in tests/relay."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import psycopg

from relay.config import RelaySettings
from relay.delivery.breaker import CircuitBreaker
from relay.delivery.outbox import Job, Retry
from relay.delivery.outcomes import Counts
from relay.delivery.regions import Region, Registry
from relay.delivery.upstash import region_failure
from relay.supervisor import Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def jobs_in(call: list[str]) -> int:
    """How many jobs one push call (EVALSHA sha numkeys keys... argv...) carries."""
    return int(call[2]) // 2


class FakeClient:
    """Answers /pipeline with `answer(commands)` (default: every push succeeds) and
    reports each request to on_attempt, as UpstashClient does."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.answer: Callable[[list[list[str]]], list[dict]] = lambda commands: [
            {"result": [1] * jobs_in(c)} for c in commands
        ]
        self.on_attempt: Callable[[bool], None] = lambda ok: None
        self.requests: list[list[list[str]]] = []
        self.commands: list[tuple] = []
        self.scripts_loaded = 0
        self.last_error: str | None = None

    async def pipeline(self, commands: list[list[str]]) -> list[dict]:
        self.requests.append([list(c) for c in commands])
        replies = self.answer(commands)
        self.on_attempt(region_failure(replies) is None)
        return replies

    async def push(self, body: str, expand) -> list[dict]:
        commands = json.loads(body)
        self.requests.append(commands)
        replies = expand(self.answer(commands))
        self.on_attempt(region_failure(replies) is None)
        return replies

    async def command(self, *args):
        self.commands.append(args)
        self.on_attempt(True)
        if args[:2] == ("SCRIPT", "LOAD"):
            self.scripts_loaded += 1
            return f"sha-{self.scripts_loaded}"
        return "PONG"

    async def aclose(self) -> None:
        pass


class FakeClaim:
    def __init__(self, jobs: list[Job], store: FakeStore) -> None:
        self.jobs = jobs
        self.store = store

    async def settle(self, requeue: list[Retry], dead: list[Retry], forget: list[int] = ()) -> None:
        self.store.requeued.extend(requeue)
        self.store.dead.extend(dead)
        for intent in forget:
            self.store.intent_rows.pop(intent, None)


class FakeStore:
    """The outbox as a list of due jobs per region; a claim takes up to `limit` of them."""

    def __init__(self) -> None:
        self.due: dict[str, list[Job]] = {}
        self.claim_error: Exception | None = None
        self.next_due_s: float | None | Exception = None
        self.requeued: list[Retry] = []
        self.dead: list[Retry] = []
        self.intent_rows: dict[int, tuple[str, list[str]]] = {}  # id: region, job ids

    @contextlib.asynccontextmanager
    async def claim(
        self, region: str, *, limit: int, fallback_only: bool, held_by: str | None, lease_s: float
    ):
        if self.claim_error:
            raise self.claim_error
        jobs = [j for j in self.due.get(region, []) if j.allow_fallback or not fallback_only]
        jobs = jobs[:limit]
        for job in jobs:
            self.due[region].remove(job)
        yield FakeClaim(jobs, self)

    async def next_due(self, region: str, *, fallback_only: bool) -> float | None:
        if isinstance(self.next_due_s, Exception):
            raise self.next_due_s
        return self.next_due_s

    async def record_intent(self, region: str, jobs: list[Job]) -> int:
        intent = max(self.intent_rows, default=0) + 1
        self.intent_rows[intent] = (region, [job.job_id for job in jobs])
        return intent

    @property
    def intents(self) -> dict[str, str]:
        """Each job a kept push intent names, and the region it names."""
        return {
            job_id: region for region, job_ids in self.intent_rows.values() for job_id in job_ids
        }


def database_down() -> psycopg.Error:
    return psycopg.OperationalError("connection refused")


def make_job(
    n: int,
    region: str = "eu",
    *,
    attempts: int = 0,
    allow_fallback: bool = True,
    pinned_to: str | None = None,
    expired: bool = False,
) -> Job:
    now = time.time()
    return Job(
        job_id=f"00000000-0000-0000-0000-{n:012d}",
        monitor_id=str(n),
        region=region,
        criticality="normal",
        scheduled_for_s=now,
        deliver_at_s=now,
        expires_at_s=now + 60,
        attempts=attempts,
        payload="{}",
        allow_fallback=allow_fallback,
        expired=expired,
        pinned_to=pinned_to,
        job_json=f'{{"job_id": "{n}"}}',
    )


def make_region(
    code: str,
    clock: Clock,
    *,
    fallback: str | None = None,
    is_default: bool = False,
    threshold: int = 3,
    cooldown: float = 10.0,
) -> Region:
    region = Region(
        code,
        FakeClient(code),
        CircuitBreaker(threshold, cooldown, clock=clock),
        fallback=fallback,
        is_default=is_default,
    )
    region.client.on_attempt = region.attempted
    return region


def make_registry(
    store: FakeStore, *regions: Region, settings: RelaySettings | None = None
) -> Registry:
    registry = Registry(store, settings or RelaySettings(), Supervisor(), Counts(), relay_id="test")
    registry.regions = {r.code: r for r in regions}
    return registry
