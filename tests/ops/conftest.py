"""Fixtures for the operations suites: the real `pgpulse` CLI in subprocesses, a dev
server standing in for three regions' Upstash databases, and a webhook receiver."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from relay.devserver import DevServer
from relay.local.embedded import free_port
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
REGIONS = {"us-east-1": ("tok-us-4b7c9e1d", 1), "eu-west-1": ("tok-eu-8f2a6c3b", 2)}


@pytest.fixture(scope="session")
def devserver(redis_server) -> Iterator[DevServer]:
    with DevServer(redis_server.url, {tok: db for tok, db in REGIONS.values()}) as server:
        yield server


@pytest.fixture
def regions(conn) -> None:
    conn.execute("INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true), ('eu-west-1', false)")
    conn.execute("UPDATE pgpulse.regions SET fallback_region = 'us-east-1' WHERE code = 'eu-west-1'")


@pytest.fixture
def relay_env(db_url, devserver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UPSTASH_", "PGPULSE_", "CRON_SECRET", "DATABASE_URL"))}
    env |= {"DATABASE_URL": db_url, "PYTHONPATH": str(ROOT), "PGPULSE_POLL_INTERVAL_S": "0.5"}
    for code, (token, _db) in REGIONS.items():
        suffix = code.upper().replace("-", "_")
        env[f"UPSTASH_REDIS_REST_URL_{suffix}"] = devserver.url
        env[f"UPSTASH_REDIS_REST_TOKEN_{suffix}"] = token
    yield env
    devserver.clear_faults()


def pgpulse(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Service:
    """A long-running `pgpulse` subprocess (relay --http, http) with its output captured."""

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "relay", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.output = ""

    def wait_ready(self) -> "Service":
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"pgpulse exited early: {self.proc.communicate()}")
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            return False
        wait_for(up, 30, "the HTTP endpoints")
        return self

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        self.output += out + err
        return self.proc.returncode


@pytest.fixture
def start_service() -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(*args: str, env: dict[str, str]) -> Service:
        port = free_port()
        listen = ["--http", f"127.0.0.1:{port}"] if args[0] == "relay" else ["--listen", f"127.0.0.1:{port}"]
        service = Service([*args, *listen], env, port)
        started.append(service)
        return service.wait_ready()

    yield start
    for service in started:
        service.stop()


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
        return [a for a in self.received
                if a["alert"] == alert and (status is None or a["status"] == status)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
