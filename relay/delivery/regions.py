"""The regions a relay delivers to: each one's state (endpoint client, breaker, wake-up),
the registry that follows the regions table, and this relay's health view of each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psycopg

from relay import logs
from relay.backoff import Backoff
from relay.config import Endpoint, RelaySettings, env_suffix, region_endpoint
from relay.db import describe
from relay.delivery.breaker import CircuitBreaker, State
from relay.delivery.outbox import Outbox
from relay.delivery.outcomes import Counts
from relay.delivery.queue import PUSH_SCRIPT
from relay.delivery.upstash import UpstashClient
from relay.errors import ConfigError, TokenRefused
from relay.ops import metrics
from relay.supervisor import Supervisor

# a health write that failed is tried again after 0.1 s, 0.2 s ... at most 5 s, 10 times
HEALTH_WRITE_RETRY = Backoff(first=0.1, most=5.0)
HEALTH_WRITE_TRIES = 10


@dataclass(eq=False)  # one object per region: compared and hashed by identity
class Region:
    """What the relay knows of one region: its row, endpoint, client and breaker."""

    code: str
    client: UpstashClient
    breaker: CircuitBreaker
    enabled: bool = True
    is_default: bool = False
    fallback: str | None = None
    script_sha: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # every worker
    idle: list[asyncio.Event] = field(default_factory=list)  # waiting workers' own wake-ups
    succeeded: bool = False  # an attempt succeeded since the breaker last opened
    refused: str | None = None  # the token-refused error, until an attempt succeeds
    row_healthy: bool | None = None  # regions.healthy as last read
    workers_absent: bool = False  # regions.workers_absent as last read or written
    results_wake: asyncio.Event = field(default_factory=asyncio.Event)  # results wait
    last_error: str | None = None  # the latest publish failure, for --once's verdict
    idle_rounds: int = 0  # waits in a row on due rows another worker holds
    due_timer: asyncio.Task | None = None  # the worker sleeping until the next due job
    due_timer_at: float = 0.0  # ... and when it wakes (the event loop's clock)
    health_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def nudge(self) -> None:
        """Jobs may be due: one waiting worker claims (and nudges the next if it finds a full
        batch); twelve workers claiming the same few jobs skip each other's locked rows.
        With none waiting, every worker looks again after its batch."""
        if self.idle:
            self.idle.pop().set()
        else:
            self.wake.set()

    async def ensure_script(self) -> str:
        """The push script's SHA in the region's Redis, loading it when not known yet."""
        if self.script_sha is None:
            self.script_sha = await self.client.command("SCRIPT", "LOAD", PUSH_SCRIPT)
        return self.script_sha

    def attempted(self, ok: bool) -> None:
        """One HTTP attempt to the region ended (the client reports every one)."""
        if ok:
            self.succeeded, self.refused = True, None
            self.breaker.record_success()
        else:
            self.breaker.record_failure()


class Registry:
    """The regions this relay can reach (a row, and an endpoint in its environment)."""

    def __init__(
        self,
        store: Outbox,
        settings: RelaySettings,
        supervisor: Supervisor,
        counts: Counts,
        *,
        relay_id: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.supervisor = supervisor
        self.counts = counts
        self.relay_id = relay_id
        self.env = env
        self.regions: dict[str, Region] = {}
        self._unconfigured: set[str] = set()  # regions without an endpoint (warned once)

    async def refresh(self, *, announce: bool = True) -> list[Region]:
        """Reads the regions table: new regions (with an endpoint here) are added, known
        ones take their row's settings. Returns the regions added."""
        added = []
        for row in await self.store.regions():
            region = self.regions.get(row.code)
            if region is None:
                try:
                    endpoint = region_endpoint(row.code, self.env)
                except ConfigError as exc:
                    if row.code not in self._unconfigured:
                        logs.warning("region_not_configured", region=row.code, reason=str(exc))
                        self._unconfigured.add(row.code)
                    continue
                region = self.regions[row.code] = self._new_region(endpoint)
                added.append(region)
            region.enabled, region.is_default = row.enabled, row.is_default
            region.fallback = row.fallback_region
            if region.row_healthy is False and row.healthy and row.enabled:
                self.supervisor.spawn(self.reroute_home(region), "home")  # back, by another relay
            region.row_healthy = row.healthy
            region.workers_absent = row.workers_absent
        # load the push script everywhere at once (a failure here is retried on publish)
        await asyncio.gather(*(r.ensure_script() for r in added), return_exceptions=True)
        if announce:
            for region in added:
                logs.event("region_added", region=region.code)
        return added

    def _new_region(self, endpoint: Endpoint) -> Region:
        s, code = self.settings, endpoint.region

        def on_change(old: State, new: State) -> None:  # `region` is bound below
            metrics.set_breaker(region.code, new.value)
            logs.warning("breaker_changed", region=region.code, old=old.value, new=new.value)
            if new is State.OPEN:
                region.succeeded = False
            self.supervisor.spawn_write(self.write_health(region), "health")
            if new is State.CLOSED:
                region.wake.set()

        breaker = CircuitBreaker(s.breaker_failures, s.breaker_cooldown_s, on_change=on_change)
        metrics.init_region(code)

        def on_retry(error: str, attempt: int, wait_s: float) -> None:
            self.counts.retries += 1
            logs.warning(
                "publish_retry", region=code, attempt=attempt, error=error, wait_s=round(wait_s, 3)
            )

        client = UpstashClient(
            endpoint,
            timeout=s.publish_timeout_s,
            retry_window=s.retry_window_s,
            may_retry=lambda: not self.supervisor.stopping and not breaker.is_open(),
            on_attempt=lambda ok: region.attempted(ok),
            on_retry=on_retry,
        )
        region = Region(code, client, breaker)
        return region

    def fallback_for(self, region: Region) -> Region | None:
        """Where this region's jobs go while its breaker is open, if anywhere: its fallback
        region, else the default region, when that one is enabled, its breaker closed and
        its workers not absent."""
        candidates = [self.regions.get(region.fallback)] if region.fallback else []
        candidates += [r for r in self.regions.values() if r.is_default]
        for target in candidates:
            if (
                target
                and target is not region
                and target.enabled
                and not target.breaker.is_open()
                and not target.workers_absent
            ):
                return target
        return None

    def token_refused(self, exc: TokenRefused) -> None:
        """A refused token will not work on a retry: open that region's breaker now (its
        jobs reroute or wait; the half-open probe tries again) and say so once."""
        region = self.regions[exc.region]
        region.breaker.trip()
        if region.refused is None:
            logs.error(
                "token_refused",
                region=region.code,
                error=str(exc),
                hint=f"check UPSTASH_REDIS_REST_TOKEN_{env_suffix(region.code)} "
                "(or UPSTASH_REDIS_REST_TOKEN)",
            )
        region.refused = str(exc)

    def wake_all(self) -> None:
        for region in self.regions.values():
            region.wake.set()

    def nudge_all(self) -> None:
        """New jobs were written (a NOTIFY): one worker of each region looks."""
        for region in self.regions.values():
            region.nudge()

    def breakers_open_s(self) -> dict[str, float]:
        """Seconds each not-closed breaker has been open, for the alert rules."""
        return {
            code: r.breaker.open_for() for code, r in self.regions.items() if r.breaker.is_open()
        }

    async def write_health(self, region: Region) -> None:
        """Records this relay's view of the region (its breaker) in region_observations;
        regions.healthy follows every live relay's recent views, not the last writer.
        Writes of one region run one at a time, each with the state current when it runs.
        No view before this relay has reached the region: closed means little until then."""
        async with region.health_lock:
            for attempt in range(1, HEALTH_WRITE_TRIES + 1):
                healthy = region.breaker.state is State.CLOSED
                if healthy and not region.succeeded:
                    return
                try:
                    changed = await self.store.observe_region(
                        region.code, self.relay_id, healthy, self.settings.health_ttl_s
                    )
                    if changed is not None:
                        region.row_healthy = changed
                        if changed:
                            self.supervisor.spawn(self.reroute_home(region), "home")
                    return
                except psycopg.Error as exc:
                    logs.warning("health_write_failed", region=region.code, error=describe(exc))
                    await asyncio.sleep(HEALTH_WRITE_RETRY.delay(attempt))

    def reconcile_health(self) -> None:
        """Renews this relay's view of every region it has one of (views expire, so a relay
        that is gone stops counting), which also re-decides regions.healthy."""
        for region in self.regions.values():
            if not region.health_lock.locked():
                self.supervisor.spawn_write(self.write_health(region), "health")

    async def reroute_home(self, region: Region) -> None:
        """A region is back: its monitors' jobs that a tick routed elsewhere while it was
        down (and that no relay has tried yet) go back to it, at once rather than after
        the minute the tick had planned."""
        try:
            moved = await self.store.reroute_home(region.code)
        except psycopg.Error as exc:
            logs.warning("reroute_home_failed", region=region.code, error=describe(exc))
            return
        if moved.inserted:
            logs.event("jobs_returned_home", region=region.code, count=moved.inserted)
            self.wake_all()

    async def aclose(self) -> None:
        for region in self.regions.values():
            await region.client.aclose()
