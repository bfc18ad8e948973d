"""What the worker suites share: the worker regions (their own Redis databases behind a dev
server that refuses commands newer than Redis 6.2), jobs as the relay pushes them, local
HTTP targets that record who connected where, and `pgpulse worker` processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.cli import clean_env
from tests.support.processes import Processes
from tests.support.regions import RegionSpec

# Databases 7-9: apart from the relay suites' 1-3 (one redis-server serves both).
WORKER_REGIONS = (
    RegionSpec("wk-east", 7, "tok-wk-east-6c1d0a", "unused-alt-1"),
    RegionSpec("wk-west", 8, "tok-wk-west-2f9b3e", "unused-alt-2"),
    RegionSpec("wk-south", 9, "tok-wk-south-8a4c71", "unused-alt-3"),
)


async def eventually(
    condition: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0
) -> Any:
    """Awaits condition() until it returns something truthy; fails after timeout (the async
    twin of tests.support.waiting.wait_for)."""
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_job(
    url: str,
    region: str = WORKER_REGIONS[0].code,
    *,
    criticality: str = "normal",
    scheduled_in_s: float = 0.0,
    interval_s: float = 60.0,
    timeout_ms: int = 2000,
    expected: list[int] | None = None,
    max_attempts: int = 1,
    delay_ms: int = 0,
    job_id: str | None = None,
    **extra: Any,
) -> dict:
    """A job as the relay publishes it (docs/queue-contract.md, version 1)."""
    scheduled = time.time() + scheduled_in_s
    return {
        "v": 1,
        "job_id": job_id or str(uuid.uuid4()),
        "monitor_id": str(uuid.uuid4()),
        "url": url,
        "method": "GET",
        "timeout_ms": timeout_ms,
        "expected_status": expected or [200],
        "retry": {"max_attempts": max_attempts, "delay_ms": delay_ms},
        "region": region,
        "criticality": criticality,
        "scheduled_for": iso(scheduled),
        "expires_at": iso(scheduled + interval_s),
        "attempt": 1,
        **extra,
    }


def push(rdb, *jobs: dict | str, region: str = WORKER_REGIONS[0].code) -> None:
    """LPUSH as the relay does (a str is pushed as it is: a malformed job)."""
    for job in jobs:
        criticality = job.get("criticality", "normal") if isinstance(job, dict) else "normal"
        value = job if isinstance(job, str) else json.dumps(job)
        rdb.lpush(f"pgpulse:jobs:{region}:{criticality}", value)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TargetServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.record(self, parts.path)
        if "ms" in query:
            time.sleep(float(query["ms"]) / 1000)
        status, headers, body = 200, {}, b"ok"
        if parts.path.startswith("/status/"):
            status = int(parts.path.rsplit("/", 1)[1])
        elif parts.path == "/redirect":
            status, headers = 302, {"Location": query["to"]}
        elif parts.path == "/big":
            body = b"x" * int(query.get("bytes", "10000000"))
        elif parts.path == "/down" and self.server.down:
            status = 503
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_HEAD = do_GET


class _TargetServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.seen: list[dict] = []
        self.down = False
        self.lock = threading.Lock()

    def record(self, handler: _Handler, path: str) -> None:
        with self.lock:
            self.seen.append(
                {
                    "path": path,
                    "query": urlsplit(handler.path).query,
                    "host": handler.headers.get("Host"),
                    # the address the client connected to: what the worker checked
                    "local": handler.connection.getsockname()[0],
                }
            )


class Targets:
    """Local HTTP targets on every loopback address (0.0.0.0: connections to 127.0.0.2 are
    told apart from 127.0.0.1): /ok, /status/NNN, /redirect?to=URL, /big, ?ms=N delays."""

    def __init__(self) -> None:
        self.server = _TargetServer(("0.0.0.0", 0))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Targets:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str = "/ok", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def seen(self) -> list[dict]:
        with self.server.lock:
            return list(self.server.seen)

    def hits(self, marker: str) -> list[dict]:
        """Requests whose query string holds `marker` (a job's own tag)."""
        return [s for s in self.seen if marker in s["query"]]


def relay_env(db_url: str, upstash_url: str, **settings: Any) -> dict[str, str]:
    """`pgpulse relay` for the worker regions (their tokens, one dev server URL)."""
    from tests.support.regions import make_relay_env

    return make_relay_env(
        db_url,
        upstash_url,
        {r.code: r.token for r in WORKER_REGIONS},
        shared_url=True,
        **({"poll_interval_s": 0.5, "log_level": "INFO"} | settings),
    )


class Workers(Processes):
    """`pgpulse worker` processes of one test, against the 6.2-compatible dev server."""

    def __init__(self, upstash_url: str, workdir: Path) -> None:
        super().__init__(workdir)
        self.upstash_url = upstash_url

    def env(self, region: RegionSpec = WORKER_REGIONS[0], **settings: Any) -> dict[str, str]:
        env = clean_env(
            UPSTASH_REDIS_REST_URL=self.upstash_url,
            UPSTASH_REDIS_REST_TOKEN=region.token,
            PGPULSE_ALLOW_PRIVATE_TARGETS="on",
            PGPULSE_LOG_LEVEL="INFO",
        )
        return env | {f"PGPULSE_{k.upper()}": str(v) for k, v in settings.items()}

    def start(  # type: ignore[override]
        self, region: RegionSpec = WORKER_REGIONS[0], *args: str, **settings: Any
    ):
        return super().start(
            "worker", "--region", region.code, *args, env=self.env(region, **settings)
        )


def metrics_url(worker) -> str:
    """The /metrics URL a worker started with `--metrics HOST:0` logged."""
    from tests.support.waiting import wait_for

    def listening() -> str | None:
        for e in worker.events():
            if e.get("event") == "worker_metrics_listening":
                return e["url"]
        assert worker.running(), worker.tail()
        return None

    return wait_for(listening, 20, "the metrics endpoint", on_timeout=worker.tail)


def samples(url: str) -> dict[tuple, float]:
    """One scrape: {(name, (label, value), ...): value}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=5).text
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(scrape: dict, name: str, **labels: str) -> float:
    return scrape[(name, *sorted(labels.items()))]
