"""The operations endpoints, one small ASGI app served by uvicorn:

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
import time
from typing import Any

import psycopg
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import dict_row

from relay import logs, metrics
from relay.alerts import watch_alerts
from relay.config import OpsSettings, dsn_secrets
from relay.db import describe
from relay.errors import PgPulseError
from relay.facts import read_facts
from relay.tick import run_tick

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=63072000"),
]
ROUTES = {"/healthz": "GET", "/readyz": "GET", "/metrics": "GET", "/api/cron/scheduler": "POST"}


async def gather_facts(dsn: str) -> dict[str, Any]:
    """What readiness, metrics and alerts look at, read in one short connection."""
    async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
        return await read_facts(conn)


class OpsApp:
    def __init__(self, dsn: str, settings: OpsSettings | None = None) -> None:
        self.dsn = dsn
        self.settings = settings or OpsSettings.from_env()
        for secret in [*dsn_secrets(dsn), self.settings.cron_secret]:
            logs.register_secret(secret)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        allowed = ROUTES.get(path)
        if allowed is None:
            return await self._json(send, 404, {"error": "not found"})
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return await self._json(send, 405, {"error": f"method {method} not allowed"},
                                    [(b"allow", allowed.encode())])
        if path == "/healthz":
            return await self._json(send, 200, {"status": "ok"})
        if path == "/readyz":
            status, body = await self.readiness()
            return await self._json(send, status, body)
        if path == "/metrics":
            try:
                metrics.publish_facts(await gather_facts(self.dsn))
                metrics.facts_ok.set(1)
            except (psycopg.Error, OSError):
                metrics.facts_ok.set(0)
            return await self._respond(send, 200, generate_latest(metrics.REGISTRY),
                                       CONTENT_TYPE_LATEST.encode())
        return await self.cron_trigger(scope, receive, send)

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        try:
            facts = await gather_facts(self.dsn)
        except (psycopg.Error, OSError) as exc:
            message = describe(exc) if isinstance(exc, psycopg.Error) else str(exc)
            return 503, {"ready": False, "reasons": [f"database unreachable: {message}"]}
        reasons = []
        age = facts["last_tick_age_s"]
        if age is None or age > self.settings.ready_max_tick_age_s:
            reasons.append("no tick finished in the last "
                           f"{self.settings.ready_max_tick_age_s:.0f} s")
        for row in facts["backlog"]:
            oldest = float(row["oldest_due_age_s"] or 0)
            if oldest > self.settings.ready_max_backlog_age_s:
                reasons.append(f"region {row['region']}: oldest due job waits {oldest:.0f} s")
        return (503 if reasons else 200), {"ready": not reasons, "reasons": reasons,
                                           "last_tick_age_s": age}

    async def cron_trigger(self, scope, receive, send) -> None:
        secret = self.settings.cron_secret
        if not secret:
            return await self._json(send, 503, {"error": "CRON_SECRET is not configured"})
        given = dict(scope["headers"]).get(b"authorization", b"")
        expected = b"Bearer " + secret.encode()
        if not hmac.compare_digest(given, expected):
            logs.warning("cron_trigger_refused")
            return await self._json(send, 401, {"error": "unauthorized"},
                                    [(b"www-authenticate", b"Bearer")])
        started = time.perf_counter()
        try:
            record = await asyncio.to_thread(run_tick, self.dsn, trigger="http")
        except PgPulseError as exc:
            logs.error("tick_failed", trigger="http", error=str(exc))
            return await self._json(send, 500, {"error": str(exc)})
        logs.event("tick", trigger="http", run_id=record["id"], claimed=record["monitors_claimed"],
                   jobs=record["jobs_written"], cut_short=record["cut_short"],
                   ms=round((time.perf_counter() - started) * 1000))
        return await self._json(send, 200, record)

    async def _json(self, send, status: int, body: Any, extra=()) -> None:
        # scrubbed before encoding: no registered secret leaves in a body, escaped or not
        await self._respond(send, status, json.dumps(logs.scrub(body)).encode(),
                            b"application/json", extra)

    async def _respond(self, send, status: int, body: bytes, content_type: bytes, extra=()) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   *SECURITY_HEADERS, *extra]
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


def make_server(app: OpsApp, addr: str, *, embedded: bool) -> uvicorn.Server:
    host, port = parse_listen(addr)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on", server_header=False)
    return (_EmbeddedServer if embedded else uvicorn.Server)(config)


async def serve_alongside(relay, addr: str, dsn: str):
    """Runs the relay, the HTTP endpoints and the alert rules in one process."""
    app = OpsApp(dsn)
    server = make_server(app, addr, embedded=True)
    serving = asyncio.create_task(server.serve(), name="http")
    alerts = asyncio.create_task(watch_alerts(dsn, app.settings, relay.stop, relay.breakers_open_s),
                                 name="alerts")
    try:
        return await relay.run()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, alerts, return_exceptions=True)


async def serve_alone(addr: str, dsn: str) -> None:
    """The endpoints without a relay (e.g. for a platform cron calling the trigger)."""
    app = OpsApp(dsn)
    server = make_server(app, addr, embedded=False)
    stop = asyncio.Event()
    alerts = asyncio.create_task(watch_alerts(dsn, app.settings, stop), name="alerts")
    try:
        await server.serve()
    finally:
        stop.set()
        await alerts
