"""`pgpulse worker --metrics HOST:PORT`, scraped from a real worker process: checks by
outcome, latency and execution lag, dropped jobs by reason, Upstash commands by kind, the
in-flight gauge; every worker metric the shipped rules name; no secret in any label."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.support.cli import ROOT, assert_one_line_error, pgpulse
from tests.support.waiting import wait_for
from tests.support.worker import (
    WORKER_REGIONS,
    Workers,
    make_job,
    metrics_url,
    push,
    sample,
    samples,
)

REGION = WORKER_REGIONS[0]
RULES = ROOT / "deploy/prometheus/pgpulse-rules.yml"


@pytest.fixture
def workers(upstash62, tmp_path) -> Iterator[Workers]:
    group = Workers(upstash62.url, tmp_path)
    yield group
    group.cleanup()


def value(scrape: dict, name: str, **labels: str) -> float:
    return sample(scrape, name, region=REGION.code, **labels)


def test_a_worker_exports_what_it_did(workers, targets, rdb):
    worker = workers.start(REGION, "--concurrency", "7", "--metrics", "127.0.0.1:0")
    url = metrics_url(worker)
    ok = [make_job(targets.url(f"/ok?m{i}")) for i in range(5)]
    push(
        rdb,
        *ok,
        ok[0],  # the same job twice: a duplicate
        make_job(targets.url("/status/500")),  # status_mismatch
        make_job("http://169.254.169.254/latest/"),  # metadata: refused, never fetched
        make_job(targets.url("/ok"), scheduled_in_s=-120, interval_s=60),  # expired
        "{not json",  # malformed
    )

    def checked() -> dict | None:
        # Redis first, then the scrape: the ack script empties the in-flight set before the
        # worker reads its reply and counts the command, so the scrape must show that too
        acked = not rdb.zcard(f"pgpulse:inflight:{REGION.code}")
        scrape = samples(url)
        ran = sum(v for k, v in scrape.items() if k[0] == "pgpulse_worker_checks_total" and v)
        acks = "pgpulse_worker_upstash_commands_total"
        counted = any(k[0] == acks and ("kind", "ack") in k and v for k, v in scrape.items())
        return scrape if acked and ran == 7 and counted else None

    scrape = wait_for(checked, 30, "7 checks counted and acknowledged", on_timeout=worker.tail)
    checks = "pgpulse_worker_checks_total"
    assert value(scrape, checks, outcome="ok") == 5
    assert value(scrape, checks, outcome="status_mismatch") == 1
    assert value(scrape, checks, outcome="refused_target") == 1
    assert value(scrape, checks, outcome="timeout") == 0  # every outcome exists from the start
    dropped = "pgpulse_worker_jobs_dropped_total"
    assert [value(scrape, dropped, reason=r) for r in ("expired", "malformed", "duplicate")] == [
        1,
        1,
        1,
    ]
    # every check has a lag and a latency (the refused one's: how long refusing took)
    assert value(scrape, "pgpulse_worker_execution_lag_seconds_count") == 7
    assert value(scrape, "pgpulse_worker_check_latency_seconds_count") == 7
    lag_sum = value(scrape, "pgpulse_worker_execution_lag_seconds_sum")
    assert 0 <= lag_sum < 7 * 30  # none early; late by at most the wait for the worker
    commands = "pgpulse_worker_upstash_commands_total"
    assert value(scrape, commands, kind="script_load") == 2  # claim and ack, once each
    assert value(scrape, commands, kind="claim") >= 1
    assert value(scrape, commands, kind="ack") >= 1
    assert value(scrape, "pgpulse_worker_upstash_errors_total", kind="claim") == 0
    assert value(scrape, "pgpulse_worker_checks_in_flight") == 0
    assert value(scrape, "pgpulse_worker_concurrency") == 7
    assert abs(value(scrape, "pgpulse_worker_last_claim_timestamp_seconds") - time.time()) < 30
    names = {k[0] for k in scrape}
    assert {"pgpulse_build_info", "process_cpu_seconds_total"} <= names
    # the relay's database-wide gauges are not this process's: none leak in
    assert "pgpulse_database_up" not in names

    # every label is a region or a word from a fixed list: no token, URL or worker id
    text = httpx.get(url, timeout=5).text
    labels = set(re.findall(r'="([^"]*)"', text))
    assert REGION.token not in text and "127.0.0.1" not in "".join(labels)
    worker_id = next(e["worker_id"] for e in worker.events() if e.get("event") == "worker_started")
    assert worker_id not in text

    base = url.rsplit("/", 1)[0]
    assert httpx.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.post(url, timeout=5).status_code == 405
    assert httpx.get(base + "/", timeout=5).status_code == 404
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()


def test_a_worker_exports_every_worker_metric_the_rules_name(workers):
    rules = yaml.safe_load(RULES.read_text())
    named = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(pgpulse_worker_[a-z_]+)\b", rule["expr"])
    }
    assert {"pgpulse_worker_execution_lag_seconds_bucket", "pgpulse_worker_checks_total"} <= named
    worker = workers.start(REGION, "--metrics", "127.0.0.1:0")
    exported = set(k[0] for k in samples(metrics_url(worker)))
    assert named <= exported, sorted(named - exported)
    assert worker.stop() == 0


def test_a_bad_or_taken_metrics_address_is_one_line_before_any_claim(workers, rdb):
    endpoint = workers.env(REGION)
    bad = pgpulse("worker", "--region", REGION.code, "--metrics", "localhost", env=endpoint)
    assert_one_line_error(bad, "bad listen address 'localhost'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = pgpulse(
            "worker",
            "--region",
            REGION.code,
            env=endpoint | {"PGPULSE_WORKER_METRICS": f"127.0.0.1:{port}"},
        )
    assert_one_line_error(busy, f"cannot serve metrics on 127.0.0.1:{port}")
    assert not rdb.zcard(f"pgpulse:workers:{REGION.code}")  # it never claimed
