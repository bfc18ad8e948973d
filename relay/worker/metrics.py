"""Prometheus metrics of `pgpulse worker`, served at GET /metrics with `--metrics HOST:PORT`.

A registry of its own, apart from the relay's (relay.ops.metrics): a worker has no database,
and the relay's database-wide gauges would read 0 here (pgpulse_database_up 0 would fire
the relay's alert). Labels are the region and a word from a fixed list (outcome, reason,
kind): never a URL, a token or a worker id (Prometheus's instance label tells workers
apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from relay import __version__, logs
from relay.errors import ConfigError
from relay.worker.checks import (
    DNS,
    PROTOCOL,
    REDIRECT_LOOP,
    REFUSED,
    REFUSED_TARGET,
    STATUS_MISMATCH,
    TIMEOUT,
    TLS,
)

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)
Info("pgpulse_build", "pgpulse version running in this process", registry=REGISTRY).info(
    {"version": __version__}
)

OK, CRASHED = "ok", "crashed"
# a check's outcome: passed, one of the error classes, or the worker's own bug (not
# acknowledged: its lease brings the job back)
OUTCOMES = (
    OK,
    DNS,
    REFUSED,
    TIMEOUT,
    TLS,
    STATUS_MISMATCH,
    REFUSED_TARGET,
    PROTOCOL,
    REDIRECT_LOOP,
    CRASHED,
)
# jobs taken from the queue and not run
DROP_REASONS = ("expired", "malformed", "duplicate", "failed_to_run")
# what a request to the region's Upstash endpoint was (each request is one command)
COMMAND_KINDS = ("claim", "heartbeat", "ack", "script_load", "other")

checks = Counter(
    "pgpulse_worker_checks",
    "Checks this worker ran, by outcome: ok, an error class, or crashed (a worker bug)",
    ["region", "outcome"],
    registry=REGISTRY,
)
check_latency = Histogram(
    "pgpulse_worker_check_latency_seconds",
    "A check's last attempt, start to (capped) body read, or to its refusal or error",
    ["region"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
execution_lag = Histogram(
    "pgpulse_worker_execution_lag_seconds",
    "A check's start - its scheduled_for (later runs of a job after a lapsed lease included)",
    ["region"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
dropped = Counter(
    "pgpulse_worker_jobs_dropped",
    "Jobs claimed and not run: expired, malformed, duplicate (already run or in flight), "
    "failed_to_run (out of runs)",
    ["region", "reason"],
    registry=REGISTRY,
)
reclaimed = Counter(
    "pgpulse_worker_leases_reclaimed",
    "Jobs this worker claimed again after another claimer's lease ran out",
    ["region"],
    registry=REGISTRY,
)
commands = Counter(
    "pgpulse_worker_upstash_commands",
    "Requests (one command each, retries included) sent to the region's Upstash endpoint",
    ["region", "kind"],
    registry=REGISTRY,
)
command_errors = Counter(
    "pgpulse_worker_upstash_errors",
    "Requests to the region's Upstash endpoint that failed",
    ["region", "kind"],
    registry=REGISTRY,
)
in_flight = Gauge(
    "pgpulse_worker_checks_in_flight", "Checks running now", ["region"], registry=REGISTRY
)
concurrency = Gauge(
    "pgpulse_worker_concurrency",
    "Checks this worker runs at once at most",
    ["region"],
    registry=REGISTRY,
)
last_claim = Gauge(
    "pgpulse_worker_last_claim_timestamp_seconds",
    "Unix time of this worker's latest claim that succeeded (0: none yet)",
    ["region"],
    registry=REGISTRY,
)


def init_region(region: str, most_at_once: int) -> None:
    """Every series exists from the start at 0, so rate() sees the region at once."""
    for outcome in OUTCOMES:
        checks.labels(region, outcome)
    for reason in DROP_REASONS:
        dropped.labels(region, reason)
    for kind in COMMAND_KINDS:
        commands.labels(region, kind)
        command_errors.labels(region, kind)
    check_latency.labels(region)
    execution_lag.labels(region)
    reclaimed.labels(region)
    in_flight.labels(region).set(0)
    concurrency.labels(region).set(most_at_once)
    last_claim.labels(region)


def outcome_of(error: str | None) -> str:
    if error is None:
        return OK
    return error if error in OUTCOMES else PROTOCOL


# -- GET /metrics --------------------------------------------------------------------

_JSON = b"application/json"


async def _app(scope: dict, receive: Any, send: Any) -> None:
    """/metrics and /healthz; nothing else is served."""
    if scope["type"] != "http":
        return
    from relay.ops.http import SECURITY_HEADERS

    path, method = scope["path"], scope["method"]
    extra: list[tuple[bytes, bytes]] = []
    if path not in ("/metrics", "/healthz"):
        status, body, kind = 404, b'{"error":"not found"}', _JSON
    elif method not in ("GET", "HEAD"):
        status, kind = 405, _JSON
        body = json.dumps({"error": f"method {method[:20]} not allowed"}).encode()
        extra.append((b"allow", b"GET"))
    elif path == "/healthz":
        status, body, kind = 200, b'{"status":"ok"}', _JSON
    else:
        status, body, kind = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode()
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def parse_listen(addr: str) -> tuple[str, int]:
    """HOST:PORT (port 0: any free one); ValueError with one line otherwise."""
    host, _, port = addr.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad listen address {addr!r}: use HOST:PORT, e.g. 127.0.0.1:9188")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen(addr: str) -> socket.socket:
    """The bound socket for serve_metrics: a taken port fails here, before any claim."""
    host, port = parse_listen(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve metrics on {addr}: {exc.strerror or exc}") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def serve_metrics(sock: socket.socket, stop: asyncio.Event) -> None:
    """Serves /metrics on the socket until stop, with the relay's HTTP guards
    (PGPULSE_HTTP_MAX_CONNECTIONS, PGPULSE_HTTP_REQUEST_TIMEOUT_S)."""
    import uvicorn

    from relay.config import OpsSettings
    from relay.ops.http import guarded_protocol

    config = uvicorn.Config(
        _app,
        access_log=False,
        lifespan="off",
        server_header=False,
        http=guarded_protocol(OpsSettings.from_env()),
        timeout_keep_alive=5,
        log_config=None,  # uvicorn's lines go through our JSON handler
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    class Embedded(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the worker owns SIGTERM
            yield

    server = Embedded(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="worker:metrics")
    host, port = sock.getsockname()[:2]
    logs.event("worker_metrics_listening", url=f"http://{host}:{port}/metrics")
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await serving
