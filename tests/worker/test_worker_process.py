"""`pgpulse worker` as real processes against the 6.2-compatible dev server and local
targets: SIGTERM finishes the checks in flight, kill -9 loses nothing (the lease brings the
jobs back, each acknowledged once in the end), two workers never run one job twice, a
malformed job is counted and skipped, a refused URL pushed by hand is never fetched."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

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
INFLIGHT = f"pgpulse:inflight:{REGION.code}"
DONE = f"pgpulse:done:{REGION.code}"


@pytest.fixture
def workers(upstash62, tmp_path) -> Iterator[Workers]:
    group = Workers(upstash62.url, tmp_path)
    yield group
    group.cleanup()


def tagged(targets, n: int, path: str = "/ok", query: str = "", **options) -> dict[str, dict]:
    """n jobs, each fetching path?<its own tag>; by tag."""
    jobs = {}
    for _ in range(n):
        tag = uuid.uuid4().hex
        jobs[tag] = make_job(targets.url(f"{path}?{query}{tag}"), **options)
    return jobs


def done(rdb, jobs) -> bool:
    return all(rdb.zscore(DONE, j["job_id"]) for j in jobs) and not rdb.zcard(INFLIGHT)


def test_sigterm_finishes_the_checks_in_flight_then_exits_0(workers, targets, rdb):
    worker = workers.start(REGION, "--concurrency", "5")
    jobs = tagged(targets, 5, query="ms=1500&")
    push(rdb, *jobs.values())
    wait_for(lambda: len(targets.seen) == 5, 20, "the checks to start", on_timeout=worker.tail)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.tail()
    assert done(rdb, jobs.values()), worker.tail()  # finished and acknowledged
    assert worker.has_event("worker_stopped", checks=5)


def test_kill_9_mid_check_loses_nothing(workers, targets, rdb):
    # lease: 1.5 s timeout x 1 attempt + 1 s margin; each check takes 1 s
    first = workers.start(REGION, "--concurrency", "10", worker_lease_margin_s=1)
    jobs = tagged(targets, 6, query="ms=1000&", timeout_ms=1500)
    push(rdb, *jobs.values())
    wait_for(lambda: len(targets.seen) == 6, 20, "the checks to start", on_timeout=first.tail)
    first.kill()
    assert rdb.zcard(INFLIGHT) == 6  # claimed, never acknowledged
    second = workers.start(
        REGION, "--concurrency", "10", "--metrics", "127.0.0.1:0", worker_lease_margin_s=1
    )
    wait_for(lambda: done(rdb, jobs.values()), 30, "the jobs to run again", on_timeout=second.tail)
    hits = Counter(tag for tag in jobs for _ in targets.hits(tag))
    assert set(hits.values()) == {2}  # once by the killed worker, once after its lease
    scrape = samples(metrics_url(second))
    assert sample(scrape, "pgpulse_worker_leases_reclaimed_total", region=REGION.code) == 6
    assert second.stop() == 0
    assert second.has_event("worker_stopped", checks=6)


def test_two_workers_in_one_region_never_run_one_job_twice(workers, targets, rdb):
    jobs = tagged(targets, 300)
    a = workers.start(REGION, "--concurrency", "20", worker_batch=10)
    b = workers.start(REGION, "--concurrency", "20", worker_batch=10)
    wait_for(lambda: a.has_event("worker_started") and b.has_event("worker_started"), 20)
    push(rdb, *jobs.values())
    wait_for(lambda: done(rdb, jobs.values()), 60, "every job", on_timeout=workers.tails)
    hits = Counter(tag for tag in jobs for _ in targets.hits(tag))
    assert set(hits.values()) == {1} and len(hits) == 300
    assert a.stop() == 0 and b.stop() == 0
    ran = [e["checks"] for w in (a, b) for e in w.events() if e.get("event") == "worker_stopped"]
    assert sum(ran) == 300 and all(ran), ran  # both took a share


def test_malformed_and_refused_jobs_are_counted_and_skipped(workers, targets, rdb):
    worker = workers.start(REGION, allow_private_targets="off")
    secret_port = targets.url("/ok?refused")
    push(
        rdb,
        "{not json",
        make_job("http://e.example/", method="TRACE"),  # parses in the script, not a check
        make_job(secret_port),  # pushed by hand around the database's rule
        make_job(f"http://[::ffff:127.0.0.1]:{targets.port}/ok?refused"),
    )
    wait_for(
        lambda: sum(1 for e in worker.events() if e.get("event") == "check_refused_target") == 2,
        20,
        "both refused",
        on_timeout=worker.tail,
    )
    assert targets.hits("refused") == []
    assert worker.has_event("jobs_dropped", malformed=1)
    assert worker.has_event("job_malformed")
    wait_for(lambda: rdb.zcard(INFLIGHT) == 0, 10, "the refused and malformed jobs acknowledged")
    assert worker.running()
    assert worker.stop() == 0


def test_status_shows_the_live_workers_of_each_region(workers, conn, db_url, rdb):
    from tests.support.cli import pgpulse
    from tests.support.seeding import add_region

    add_region(conn, REGION.code, is_default=True)
    add_region(conn, "elsewhere-1")  # no endpoint configured here: unknown
    worker = workers.start(REGION)
    wait_for(lambda: rdb.zcard(f"pgpulse:workers:{REGION.code}"), 20, "a heartbeat")
    env = workers.env(REGION) | {"DATABASE_URL": db_url}
    env.pop("UPSTASH_REDIS_REST_URL")
    env[f"UPSTASH_REDIS_REST_URL_{REGION.code.upper().replace('-', '_')}"] = workers.upstash_url
    status = pgpulse("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    alive = json.loads(status.stdout)["workers"]
    (worker_id,) = alive[REGION.code]
    assert worker_id.endswith(f":{worker.pid}:" + worker_id.rsplit(":", 1)[1])
    assert alive["elsewhere-1"] is None
    human = pgpulse("status", env=env).stdout
    assert f"workers alive (heartbeat within 30 s): elsewhere-1 ?, {REGION.code} 1" in human
    assert worker.stop() == 0


def test_worker_mistakes_get_one_line_errors():
    from tests.support.cli import assert_one_line_error, clean_env, pgpulse

    endpoint = {"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9", "UPSTASH_REDIS_REST_TOKEN": "t0k"}
    for args, env, fragment in (
        (["--region", "Bad_Code"], endpoint, "is not a region code"),
        (["--region", "us-east-1"], {}, "set UPSTASH_REDIS_REST_URL_US_EAST_1"),
        (["--region", "us-east-1", "--concurrency", "0"], endpoint, "--concurrency must be"),
        (
            ["--region", "us-east-1"],
            endpoint | {"PGPULSE_WORKER_IDLE_MAX_S": "0"},
            "PGPULSE_WORKER_IDLE_MAX_S must be between 0.05 and 60",
        ),
        (
            ["--region", "us-east-1"],
            endpoint | {"PGPULSE_ALLOW_PRIVATE_TARGETS": "maybe"},
            "PGPULSE_ALLOW_PRIVATE_TARGETS must be on or off",
        ),
    ):
        assert_one_line_error(pgpulse("worker", *args, env=clean_env(**env)), fragment)
