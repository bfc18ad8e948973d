"""The operations endpoints, one small ASGI app served by uvicorn:

GET  /                    the status page (relay.ops.statuspage)
GET  /healthz             the process is alive
GET  /readyz              database reachable, a recent tick, backlog age under threshold
GET  /metrics             Prometheus text format
POST /api/cron/scheduler  the old serverless endpoint: runs one tick (Bearer $CRON_SECRET)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import resource
import time
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay import logs
from relay.config import OpsSettings, dsn_secrets
from relay.delivery.breaker import State
from relay.errors import PgPulseError
from relay.ops import metrics, statuspage
from relay.ops.alerts import watch_alerts
from relay.ops.snapshot import FactsCache, Snapshot
from relay.schedule.tick import TickParams, run_tick

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=63072000"),
]
ROUTES = {
    "/": "GET",
    "/healthz": "GET",
    "/readyz": "GET",
    "/metrics": "GET",
    "/api/cron/scheduler": "POST",
}


def delivering_regions(relay) -> set[str]:
    """Regions this relay delivers to right now: configured here, enabled, breaker closed."""
    return {
        code
        for code, region in relay.regions.items()
        if region.enabled and region.breaker is not None and region.breaker.state is State.CLOSED
    }


def judge_readiness(
    snapshot: Snapshot,
    settings: OpsSettings,
    delivering: set[str] | None,
    stopping: bool = False,
    now: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """Is THIS instance fit to serve? Its database reads work and are fresh, and no region
    it delivers to has a due job waiting too long. `delivering`: None without a relay.

    A region in an outage (breaker open here, or marked unhealthy by any relay) or not
    served by this instance has an expected backlog: listed under "waiting", not a reason.
    A missing tick is pg_cron's trouble, not this instance's: a warning (and an alert)."""
    reasons: list[str] = []
    warnings: list[str] = []
    waiting: dict[str, Any] = {}
    if stopping:
        reasons.append("shutting down")
    if not snapshot.database_ok:
        reasons.append(f"database: {snapshot.error}")
    age = snapshot.age_s(now)
    stale_after = settings.ready_max_facts_age_s
    if age is not None and age > stale_after:
        reasons.append(f"database facts are {age:.0f} s old (limit {stale_after:.0f} s)")
    facts = snapshot.facts or {}
    tick_age = facts.get("last_tick_age_s")
    if snapshot.facts is not None and (
        tick_age is None or tick_age > settings.ready_max_tick_age_s
    ):
        warnings.append(
            f"no tick finished in the last {settings.ready_max_tick_age_s:.0f} s "
            "(pg_cron or the platform cron; not this instance)"
        )
    health = facts.get("schedule") or {}
    for count, what in (
        (health.get("overdue"), "active monitors overdue by more than 90 s (no tick took them)"),
        (health.get("parked"), "active monitors parked (not scheduled)"),
        (health.get("skipped"), "monitors skipped by the latest tick"),
        (health.get("unrouted"), "due monitors no region can take"),
        (
            (health.get("follow_oldest_s") or 0) > 120 and health.get("follow_pending"),
            "product rows of bulk writes not followed for over 120 s (no relay or tick)",
        ),
    ):
        if count:
            warnings.append(f"{count} {what}: the scheduler's trouble, not this instance's")
    for region, seen in sorted((facts.get("absent_workers") or {}).items()):
        where = seen["routed_to"]
        warnings.append(
            f"region {region}: workers absent for {seen['absent_s'] or 0:.0f} s, its monitors "
            + (f"that may fall back go to {where}" if where else "are not checked")
            + ": the workers' trouble, not this instance's"
        )
    unhealthy = facts.get("unhealthy_regions") or {}
    for row in facts.get("backlog") or []:
        region, oldest = row["region"], float(row["oldest_due_age_s"] or 0)
        if oldest <= settings.ready_max_backlog_age_s:
            continue
        if delivering is None:
            why = "no relay in this process"
        elif region in unhealthy:
            why = "region marked unhealthy (outage)"
        elif region not in delivering:
            why = "not delivered by this relay now (breaker not closed, disabled or not configured)"
        else:
            reasons.append(f"region {region}: oldest due job waits {oldest:.0f} s")
            continue
        waiting[region] = {"oldest_due_age_s": round(oldest), "why": why}
    return (503 if reasons else 200), {
        "ready": not reasons,
        "reasons": reasons,
        "warnings": warnings,
        "waiting": waiting,
        "last_tick_age_s": tick_age,
        "facts_age_s": None if age is None else round(age, 1),
    }


class OpsApp:
    """The ASGI app. Routes live in ROUTES; the facts every page shows come from
    `self.facts.snapshot` (relay.ops.snapshot), refreshed by one loop while the app is served."""

    def __init__(self, dsn: str, settings: OpsSettings | None = None, relay=None) -> None:
        self.dsn = dsn
        self.settings = settings or OpsSettings.from_env()
        self.relay = relay  # the relay in this process (serve_alongside), or None
        self.facts = FactsCache(dsn, self.settings.facts_interval_s)
        # requests other than /healthz in flight at once; more are answered 503 at once
        self.busy = asyncio.Semaphore(self.settings.http_max_requests)
        self._facts_task: asyncio.Task | None = None
        self.stopping = asyncio.Event()  # set when the server shuts down
        self.companions: list[asyncio.Task] = []  # tasks that end with it (awaited then)
        for secret in [*dsn_secrets(dsn), self.settings.cron_secret]:
            logs.register_secret(secret)

    async def startup(self) -> None:
        self._facts_task = asyncio.create_task(self.facts.run(self.stopping), name="facts")

    async def shutdown(self) -> None:
        self.stopping.set()
        tasks = [t for t in (self._facts_task, *self.companions) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        allowed = ROUTES.get(path)
        if allowed is None:
            return await self._json(send, 404, {"error": "not found"})
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return await self._json(
                send, 405, {"error": f"method {method} not allowed"}, [(b"allow", allowed.encode())]
            )
        if path == "/healthz":  # never queued behind anything: liveness must answer
            return await self._json(send, 200, {"status": "ok"})
        if self.busy.locked():
            return await self._json(send, 503, {"error": "busy"}, [(b"retry-after", b"1")])
        async with self.busy:
            await self.route(path, scope, receive, send)

    async def route(self, path: str, scope, receive, send) -> None:
        """The routes behind the concurrency cap (add new pages here and to ROUTES)."""
        if path == "/":
            return await self.status_page(scope, send)
        if path == "/readyz":
            status, body = await self.readiness()
            return await self._json(send, status, body)
        if path == "/metrics":
            return await self._respond(
                send, 200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST.encode()
            )
        return await self.cron_trigger(scope, receive, send)

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        if self.facts.snapshot.attempted_at is None:  # just started: wait for the first read
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.facts.refreshed.wait(), 10)
        relay = self.relay
        return judge_readiness(
            self.facts.snapshot,
            self.settings,
            None if relay is None else delivering_regions(relay),
            stopping=relay is not None and relay.stop.is_set(),
        )

    async def status_page(self, scope, send) -> None:
        denied = statuspage.access(scope, self.settings)
        if denied:
            status, reason = denied
            extra = [(b"www-authenticate", b'Basic realm="pgpulse"')] if status == 401 else []
            return await self._json(send, status, {"error": reason}, extra)
        # the cached snapshot, like /readyz and /metrics: no database read per request
        breakers = self.relay.breakers_open_s() if self.relay is not None else {}
        body = statuspage.render(
            self.facts.snapshot, self.settings, breakers_open_s=breakers
        ).encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *[(k, v) for k, v in SECURITY_HEADERS if k != b"content-security-policy"],
            (b"content-security-policy", statuspage.CSP.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def cron_trigger(self, scope, receive, send) -> None:
        secret = self.settings.cron_secret
        if not secret:
            return await self._json(send, 503, {"error": "CRON_SECRET is not configured"})
        given = dict(scope["headers"]).get(b"authorization", b"")
        expected = b"Bearer " + secret.encode()
        if not hmac.compare_digest(given, expected):
            logs.warning("cron_trigger_refused")
            return await self._json(
                send, 401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")]
            )
        started = time.perf_counter()
        try:
            record = await asyncio.to_thread(run_tick, self.dsn, TickParams(), trigger="http")
        except PgPulseError as exc:
            logs.error("tick_failed", trigger="http", error=str(exc))
            return await self._json(send, 500, {"error": str(exc)})
        logs.event(
            "tick",
            trigger="http",
            run_id=record["id"],
            claimed=record["monitors_claimed"],
            jobs=record["jobs_written"],
            cut_short=record["cut_short"],
            ms=round((time.perf_counter() - started) * 1000),
        )
        return await self._json(send, 200, record)

    async def _json(self, send, status: int, body: Any, extra=()) -> None:
        # scrubbed before encoding: no registered secret leaves in a body, escaped or not
        await self._respond(
            send, status, json.dumps(logs.scrub(body)).encode(), b"application/json", extra
        )

    async def _respond(self, send, status: int, body: bytes, content_type: bytes, extra=()) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def parse_listen(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise PgPulseError(f"bad listen address {addr!r}: use HOST:PORT, e.g. 127.0.0.1:9187")
    return host or "127.0.0.1", int(port)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the relay's process: the relay owns SIGTERM and stops the server."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


def connection_cap(configured: int) -> int:
    """Open HTTP connections allowed: the setting, but never more than half of the
    descriptors left after a reserve for the relay (database, Upstash, pipes)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(4, min(configured, (soft - 64) // 2))


def guarded_protocol(settings: OpsSettings):
    """uvicorn's httptools protocol with two guards against slow or piled-up clients:

    - a request must arrive whole (headers and body) within http_request_timeout_s of its
      first byte (or of the connection, for the first one): 408, then the connection goes;
    - at most http_max_connections connections are open: a new one evicts the connection
      that has waited longest for its request, so descriptors stay free for the relay and a
      quick probe (/healthz) always gets in, however many half-sent requests pile up."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpProtocol(HttpToolsProtocol):
        dropped = 0  # connections closed by a guard (for the tests and the logs)

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline: asyncio.TimerHandle | None = None
            self._waiting_since = self.loop.time()
            self._arm()
            if len(self.connections) > connection_cap(settings.http_max_connections):
                self._evict()

        def _arm(self) -> None:
            if self._deadline is None:
                self._waiting_since = self.loop.time()
                self._deadline = self.loop.call_later(
                    settings.http_request_timeout_s, self._too_slow
                )

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _drop(self, answer: bytes = b"") -> None:
            self._disarm()
            type(self).dropped += 1
            if answer and not self.transport.is_closing():
                self.transport.write(answer)
            self.transport.close()

        def _too_slow(self) -> None:
            self._deadline = None
            self._drop(_REQUEST_TIMEOUT)

        def _evict(self) -> None:
            waiting: list[GuardedHttpProtocol] = [
                c
                for c in self.connections
                if isinstance(c, GuardedHttpProtocol) and c._deadline is not None and c is not self
            ]
            victim = min(waiting, key=lambda c: c._waiting_since, default=self)
            victim._drop()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()  # the app has the request: its own time is bounded elsewhere
            super().on_message_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpProtocol


def make_server(app: OpsApp, addr: str, *, embedded: bool) -> uvicorn.Server:
    host, port = parse_listen(addr)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        lifespan="on",
        server_header=False,
        http=guarded_protocol(app.settings),
        timeout_keep_alive=5,
        backlog=128,
        # uvicorn's lines go through our JSON handler (redacted, throttled)
        log_config=None,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return (_EmbeddedServer if embedded else uvicorn.Server)(config)


async def serve_alongside(relay, addr: str, dsn: str):
    """Runs the relay, the HTTP endpoints and the alert rules in one process."""
    app = OpsApp(dsn, relay=relay)
    server = make_server(app, addr, embedded=True)
    serving = asyncio.create_task(server.serve(), name="http")
    alerts = asyncio.create_task(
        watch_alerts(dsn, app.settings, relay.stop, relay.breakers_open_s), name="alerts"
    )
    try:
        return await relay.run()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, alerts, return_exceptions=True)


async def serve_alone(addr: str, dsn: str) -> None:
    """The endpoints without a relay (e.g. for a platform cron calling the trigger)."""
    app = OpsApp(dsn)
    server = make_server(app, addr, embedded=False)
    # stopped with the app (its lifespan's shutdown): uvicorn raises SIGTERM again once
    # serve() returns, so the evaluator gives its lease up before that, not after
    alerts = asyncio.create_task(watch_alerts(dsn, app.settings, app.stopping), name="alerts")
    app.companions.append(alerts)
    try:
        await server.serve()
    finally:
        app.stopping.set()
        await alerts
