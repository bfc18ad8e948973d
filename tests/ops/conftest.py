"""Fixtures for the operations suites: two regions (us-east-1 and eu-west-1 of
tests.support.regions) behind the session's dev server, the environment `pgpulse` runs in,
long-running `pgpulse` services, and a webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relay.local.embedded import free_port
from tests.support.processes import PgpulseProcess, Processes
from tests.support.regions import BY_CODE, make_relay_env
from tests.support.seeding import add_regions

OPS_REGIONS = ("us-east-1", "eu-west-1")


@pytest.fixture
def regions(conn) -> None:
    add_regions(conn, "us-east-1", {"eu-west-1": "us-east-1"})


@pytest.fixture
def relay_env(db_url, devserver) -> Iterator[dict[str, str]]:
    yield make_relay_env(
        db_url,
        devserver.url,
        {code: BY_CODE[code].token for code in OPS_REGIONS},
        poll_interval_s=0.5,
    )
    devserver.clear_faults()


@pytest.fixture
def start_service(tmp_path) -> Iterator[Callable[..., PgpulseProcess]]:
    """start_service("relay" | "http", *args, env=..., preexec_fn=...): a `pgpulse` service
    with its HTTP endpoints on a free port, once /healthz answers."""
    processes = Processes(tmp_path)

    def start(*args: str, env: dict[str, str], **kwargs: Any) -> PgpulseProcess:
        port = free_port()
        listen = (
            ["--http", f"127.0.0.1:{port}"]
            if args[0] == "relay"
            else ["--listen", f"127.0.0.1:{port}"]
        )
        return processes.start(*args, *listen, env=env, port=port, **kwargs).wait_ready()

    yield start
    processes.stop_all()


class Receiver:
    """A real HTTP server that records the JSON bodies POSTed to it (the alert webhook)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, alert: str, status: str | None = None) -> list[dict]:
        return [
            a
            for a in self.received
            if a["alert"] == alert and (status is None or a["status"] == status)
        ]

    def since(self, mark: int, alert: str, status: str | None = None) -> list[dict]:
        """Like `of`, among the bodies received after the first `mark` ones."""
        return [
            a
            for a in self.received[mark:]
            if a["alert"] == alert and (status is None or a["status"] == status)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
