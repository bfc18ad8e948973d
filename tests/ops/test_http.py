"""The operations endpoints, served by the real `pgpulse http` (or `relay --http`) process:
shared facts under load, a blocked read, a region's outage, slow clients. Routes, auth and
readiness in-process: tests/unit/test_ops_routes.py, tests/integration/test_ops_app.py."""

import concurrent.futures
import json
import os
import resource
import socket
import threading
import time

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.support.cli import pgpulse
from tests.support.regions import take_down
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for

FAST = {"PGPULSE_FACTS_INTERVAL_S": "0.2"}


def readyz(service) -> httpx.Response:
    return httpx.get(service.url + "/readyz", timeout=10)


def facts_shown(service) -> bool:
    return "pgpulse_outbox_backlog{" in httpx.get(service.url + "/metrics", timeout=10).text


def backends(conn) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()["n"]


def test_parallel_scrapes_share_one_cached_read(conn, regions, relay_env, start_service):
    add_monitors(conn, 20, due="-5 seconds")
    service = start_service("http", env=relay_env | FAST)
    wait_for(lambda: facts_shown(service), 10, "the facts in /metrics")
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(conn.info.dsn, autocommit=True, row_factory=dict_row) as watcher:
            while not done.is_set():
                peak[0] = max(peak[0], backends(watcher) - 1)  # minus the test's own conn
                time.sleep(0.02)  # the sampling rate, not a wait

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        with (
            concurrent.futures.ThreadPoolExecutor(40) as pool,
            httpx.Client(timeout=30, limits=httpx.Limits(max_connections=40)) as http,
        ):
            paths = ["/metrics", "/readyz"] * 40
            statuses = list(pool.map(lambda p: http.get(service.url + p).status_code, paths))
        print(f"{len(paths)} scrapes in {time.monotonic() - started:.1f} s")
    finally:
        done.set()
        watcher.join()
    assert all(status in (200, 503) for status in statuses)
    assert statuses.count(200) >= len(statuses) // 2, statuses  # the cap sheds some, not most
    # the facts loop's connection and the alert evaluator's, however many scrapes
    assert peak[0] <= 2, f"{peak[0]} database connections for {len(paths)} scrapes"


def test_a_blocked_facts_query_is_cut_by_its_statement_timeout(
    conn, regions, relay_env, start_service
):
    service = start_service("http", env=relay_env | FAST)
    wait_for(lambda: facts_shown(service), 10, "the facts in /metrics")
    with psycopg.connect(conn.info.dsn) as locker:
        locker.execute("LOCK TABLE pgpulse.outbox IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        cut = wait_for(
            lambda: (r := readyz(service)).status_code == 503 and r,
            30,
            "the statement timeout to show",
        )
        assert "statement timeout" in " ".join(cut.json()["reasons"])
        assert time.monotonic() - started < 20  # the 5 s timeout, not the lock, ends the read
        assert httpx.get(service.url + "/healthz", timeout=5).status_code == 200
    wait_for(lambda: readyz(service).status_code == 200, 15, "ready again after the lock")


def test_readyz_judges_this_instance_not_a_pinned_regions_outage(
    conn, regions, relay_env, devserver, start_service
):
    # eu-west-1 is down; its pinned jobs (no fallback) must wait: expected, not unready
    take_down(devserver, relay_env["UPSTASH_REDIS_REST_TOKEN_EU_WEST_1"])
    conn.execute(
        "INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, "
        "scheduled_for, deliver_at, expires_at, allow_fallback, payload) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'eu-west-1', 'normal', "
        "now() - interval '10 minutes', now() - interval '10 minutes', "
        "now() + interval '1 hour', false, '{\"url\": \"https://x.example\"}' "
        "FROM generate_series(1, 5) g"
    )
    env = (
        relay_env
        | FAST
        | {
            "PGPULSE_BREAKER_FAILURES": "1",
            "PGPULSE_RETRY_WINDOW_S": "0.2",
            "PGPULSE_BREAKER_COOLDOWN_S": "600",
            "PGPULSE_READY_MAX_BACKLOG_AGE_S": "60",
        }
    )
    service = start_service("relay", env=env)
    ready = wait_for(
        lambda: (r := readyz(service)).json()["waiting"] and r,
        30,
        "the outage to show under waiting",
    )
    assert ready.status_code == 200, ready.text
    assert ready.json()["waiting"]["eu-west-1"]["why"] in (
        "region marked unhealthy (outage)",
        "not delivered by this relay now (breaker not closed, disabled or not configured)",
    )
    assert ready.json()["reasons"] == []


FD_LIMIT = 128


class Slowloris:
    """Real sockets that send a request's headers a few bytes at a time and never finish,
    reopening each one the server closes, for as long as `run` lasts."""

    def __init__(self, port: int, sockets: int) -> None:
        self.port, self.size = port, sockets
        self.socks: list[socket.socket] = []
        self.opened = self.closed_by_server = 0

    def _open(self) -> bool:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.3)
            sock.setblocking(False)
            sock.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            return False
        self.socks.append(sock)
        self.opened += 1
        return True

    def trickle(self) -> None:
        for sock in list(self.socks):
            try:
                sock.send(b"X-a: b\r\n")
                if sock.recv(4096, socket.MSG_PEEK) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                self.socks.remove(sock)
                sock.close()
                self.closed_by_server += 1
        while len(self.socks) < self.size and self._open():
            pass

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_healthz_answers_under_a_slowloris_flood_with_few_descriptors(
    conn, regions, relay_env, start_service
):
    add_monitors(conn, 30, due="-5 seconds")
    env = relay_env | FAST | {"PGPULSE_HTTP_REQUEST_TIMEOUT_S": "2"}
    few_descriptors = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))  # noqa: E731
    service = start_service("relay", env=env, preexec_fn=few_descriptors)
    flood = Slowloris(service.port, 160)  # more half-sent requests than the process has descriptors
    answered = failed = 0
    try:
        for _ in range(15):
            flood.trickle()
            try:
                ok = httpx.get(service.url + "/healthz", timeout=3).status_code == 200
            except httpx.TransportError:
                ok = False
            answered += ok
            failed += not ok
            time.sleep(0.2)  # the attacker's pace, not a wait for a condition
        assert service.proc.poll() is None, (
            f"the relay died under the flood: {service.output[-4000:]}"
        )
        open_fds = len(os.listdir(f"/proc/{service.proc.pid}/fd"))
    finally:
        flood.close()
    # the relay still works: the tick's jobs all leave the outbox
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(
        lambda: conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0,
        30,
        "the relay to publish after the flood",
    )
    assert service.stop() == 0, f"the relay's last words: {service.output[-4000:]}"
    print(
        f"slowloris: {flood.opened} opened, {flood.closed_by_server} closed by the server, "
        f"/healthz {answered} answered, {failed} failed, {open_fds} descriptors open, "
        f"{len(service.output)} bytes of logs"
    )
    assert failed <= 2, f"/healthz: {answered} answered, {failed} failed"
    assert flood.closed_by_server >= 100, "half-sent requests were not timed out or evicted"
    assert open_fds < FD_LIMIT - 16
    assert len(service.output) < 100_000, f"{len(service.output)} bytes of logs"


def test_a_flood_of_one_log_line_is_throttled():
    import io
    import logging

    from relay import logs

    clock = [0.0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.Throttle(burst=50, window_s=10, clock=lambda: clock[0]))
    logger = logging.getLogger("uvicorn.error.test_throttle")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(10_000):
            logger.warning("Invalid HTTP request received.")
        clock[0] = 11
        logger.warning("Invalid HTTP request received.")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 51
    assert json.loads(lines[-1])["suppressed_before"] == 10_000 - 50
