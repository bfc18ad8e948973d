"""The consumer side of the queue contract, version 2 (docs/queue-contract.md): the claim and
ack scripts (relay/scripts/*.lua, plain files any worker can load), their keys, and one
region's calls to them over the Upstash REST client the relay uses."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from relay.delivery.queue import CRITICALITIES, queue_key
from relay.delivery.upstash import UpstashClient
from relay.errors import MalformedReply, PublishError

# a done marker outlives the job's expires_at by this (a copy pushed late is still skipped)
DONE_MARGIN_MS = 60_000
# heartbeats younger than this count as a live worker (a worker claims at least every
# HEARTBEAT_S, idle or busy)
ALIVE_S = 30.0
HEARTBEAT_S = 10.0
# most results a region's results list holds (PGPULSE_WORKER_RESULTS_CAP): past it the
# oldest are trimmed and counted, so a stopped relay never fills the region's database
RESULTS_CAP = 100_000
WORKER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
# what the request being sent is (claim, heartbeat, ack, script_load): the client's
# on_attempt callback reads it to count commands by kind
COMMAND_KIND: ContextVar[str] = ContextVar("pgpulse_command_kind", default="other")


@contextlib.contextmanager
def command_kind(kind: str) -> Iterator[None]:
    token = COMMAND_KIND.set(kind)
    try:
        yield
    finally:
        COMMAND_KIND.reset(token)


def script_text(name: str) -> str:
    """relay/scripts/<name>.lua as shipped in the package."""
    return (files("relay") / "scripts" / f"{name}.lua").read_text(encoding="utf-8")


def inflight_key(region: str) -> str:
    return f"pgpulse:inflight:{region}"


def workers_key(region: str) -> str:
    return f"pgpulse:workers:{region}"


def done_key(region: str) -> str:
    """The region's done markers: a sorted set, job_id -> until when it is skipped (ms)."""
    return f"pgpulse:done:{region}"


def taken_key(region: str) -> str:
    return f"pgpulse:taken:{region}"


def results_key(region: str) -> str:
    return f"pgpulse:results:{region}"


def results_dropped_key(region: str) -> str:
    return f"pgpulse:results:{region}:dropped"


def claim_keys(region: str) -> list[str]:
    """The claim script's KEYS, in its order: every key it touches."""
    inflight = inflight_key(region)
    return [
        *(queue_key(region, c) for c in CRITICALITIES),
        inflight,
        f"{inflight}:jobs",
        f"{inflight}:runs",
        workers_key(region),
        f"pgpulse:claimround:{region}",
        done_key(region),
        taken_key(region),
    ]


def ack_keys(region: str) -> list[str]:
    inflight = inflight_key(region)
    return [
        inflight,
        f"{inflight}:jobs",
        f"{inflight}:runs",
        done_key(region),
        results_key(region),
        results_dropped_key(region),
    ]


@dataclass(frozen=True)
class Claimed:
    """One job a claim handed out: its JSON as pushed, which run of it this is (1, or more
    after a lease ran out) and its lease deadline (Redis clock, unix ms)."""

    job_id: str
    body: str
    run: int
    deadline_ms: int


@dataclass
class Claim:
    """What one claim call answered."""

    now_ms: int
    expired: int = 0  # dropped: taken after their expires_at
    malformed: int = 0  # dropped: not JSON, or no job_id / expires_at
    duplicates: int = 0  # dropped: already run (done marker) or in flight
    jobs: list[Claimed] = field(default_factory=list)  # to run now
    failed: list[Claimed] = field(default_factory=list)  # out of runs: failed to run


def _claimed(flat: Any) -> list[Claimed]:
    if not isinstance(flat, list) or len(flat) % 4:
        raise MalformedReply("the claim script answered a malformed job list")
    return [
        Claimed(str(flat[i]), str(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


class Scripts:
    """relay/scripts/<name>.lua run on one region's Redis: EVALSHA, loading the script first
    (and again after a NOSCRIPT answer: Redis lost its scripts in a restart)."""

    def __init__(self, client: UpstashClient, region: str) -> None:
        self.client = client
        self.region = region
        self._shas: dict[str, str] = {}

    async def call(self, script: str, keys: list[str], argv: list[Any]) -> Any:
        for _ in range(2):
            sha = self._shas.get(script)
            if sha is None:
                sha = self._shas[script] = await self.client.command(
                    "SCRIPT", "LOAD", script_text(script)
                )
            try:
                return await self.client.command("EVALSHA", sha, len(keys), *keys, *argv)
            except PublishError as exc:
                if "NOSCRIPT" not in str(exc):
                    raise
                self._shas.pop(script, None)
        raise PublishError(f"region {self.region}: the {script} script cannot be loaded")


class ConsumerQueue:
    """One region's v2 calls for one worker: claim, ack, live workers. Each call is one
    command (EVALSHA; a NOSCRIPT answer loads the script and calls once more)."""

    def __init__(
        self,
        client: UpstashClient,
        region: str,
        worker_id: str,
        *,
        lease_margin_ms: int = 10_000,
        max_runs: int = 3,
        results_cap: int = RESULTS_CAP,
    ) -> None:
        if not WORKER_ID.match(worker_id):
            raise ValueError("a worker id is 1-100 characters of A-Z a-z 0-9 . _ : @ -")
        self.client = client
        self.region = region
        self.worker_id = worker_id
        self.lease_margin_ms = lease_margin_ms
        self.max_runs = max_runs
        self.results_cap = results_cap
        self._shas: dict[str, str] = {}
        self._claim_keys = claim_keys(region)
        self._ack_keys = ack_keys(region)

    async def _call(self, script: str, keys: list[str], argv: list[Any], kind: str) -> Any:
        for _ in range(2):
            sha = self._shas.get(script)
            if sha is None:
                with command_kind("script_load"):
                    sha = self._shas[script] = await self.client.command(
                        "SCRIPT", "LOAD", script_text(script)
                    )
            try:
                with command_kind(kind):
                    return await self.client.command("EVALSHA", sha, len(keys), *keys, *argv)
            except PublishError as exc:
                if "NOSCRIPT" not in str(exc):
                    raise
                self._shas.pop(script, None)  # Redis lost its scripts (a restart)
        raise PublishError(f"region {self.region}: the {script} script cannot be loaded")

    async def claim(self, n: int) -> Claim:
        """Up to n jobs (0: only renew this worker's heartbeat)."""
        reply = await self._call(
            "claim",
            self._claim_keys,
            [self.worker_id, n, self.lease_margin_ms, self.max_runs],
            "claim" if n else "heartbeat",
        )
        if not isinstance(reply, list) or len(reply) != 6:
            raise MalformedReply(f"region {self.region}: the claim script answered {reply!r:.80}")
        now, expired, malformed, duplicates, jobs, failed = reply
        return Claim(
            int(now),
            int(expired),
            int(malformed),
            int(duplicates),
            _claimed(jobs),
            _claimed(failed),
        )

    async def ack(self, acks: list[tuple[str, str]]) -> list[int]:
        """Acknowledges (job_id, result) pairs; result is JSON text or "" (none), kept on the
        region's results list for the relay. Answers per job: 1 done, 2 done though another
        worker held the lease, 0 not in flight any more (its result is not kept)."""
        if not acks:
            return []
        argv: list[Any] = [self.worker_id, DONE_MARGIN_MS, self.results_cap]
        for job_id, result in acks:
            argv += [job_id, result]
        reply = await self._call("ack", self._ack_keys, argv, "ack")
        if not isinstance(reply, list) or len(reply) != len(acks):
            raise MalformedReply(f"region {self.region}: the ack script answered {reply!r:.80}")
        return [int(a) for a in reply]


async def live_workers(client: UpstashClient, region: str, within_s: float = ALIVE_S) -> list[str]:
    """Workers of a region that claimed within `within_s`, by the region's Redis clock: one
    pipeline of TIME and ZRANGEBYSCORE is not atomic, so the clock is read first and the
    window is the heartbeat's own."""
    seconds, micros = await client.command("TIME")
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    found = await client.command(
        "ZRANGEBYSCORE", workers_key(region), now_ms - int(within_s * 1000), "+inf"
    )
    return [str(w) for w in found]


def alive_by_region(codes: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """`pgpulse status`: per region, the ids of its live workers; None where no endpoint
    is configured here, the error text where the endpoint could not be read."""
    import asyncio

    from relay.config import region_endpoint
    from relay.errors import ConfigError, PgPulseError

    async def one(code: str) -> Any:
        try:
            endpoint = region_endpoint(code, env)
        except ConfigError:
            return None
        client = UpstashClient(endpoint, timeout=3.0, retry_window=0)
        try:
            return sorted(await live_workers(client, code))
        except PgPulseError as exc:
            return f"unreadable: {exc}"[:200]
        finally:
            await client.aclose()

    async def every() -> list[Any]:
        return await asyncio.gather(*(one(code) for code in codes))

    return dict(zip(codes, asyncio.run(every())))
