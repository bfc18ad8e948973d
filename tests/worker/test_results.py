"""Check results back in PostgreSQL, with real processes: `pgpulse worker` acknowledges with
results, `pgpulse relay` drains them into pgpulse.results_latest (and the history when it is
on). Exactly once per (monitor, region, slot) through a relay killed with -9 mid-ingest; a
malformed result is counted and skipped; the results list's cap is reached and survived."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.config import Endpoint
from relay.delivery.upstash import UpstashClient
from relay.local.embedded import free_port
from relay.worker.protocol import ConsumerQueue
from tests.support.processes import Processes
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for
from tests.support.worker import WORKER_REGIONS, Workers, make_job, push, relay_env

EAST, WEST = WORKER_REGIONS[0], WORKER_REGIONS[1]
RESULTS = f"pgpulse:results:{EAST.code}"


@pytest.fixture
def stack(conn, db_url, upstash62, tmp_path) -> Iterator[Processes]:
    """The worker regions in pgpulse.regions (east falls back to west, the default)."""
    conn.execute(
        "INSERT INTO pgpulse.regions (code, is_default, fallback_region) "
        "VALUES (%s, true, NULL), (%s, false, %s)",
        (WEST.code, EAST.code, WEST.code),
    )
    processes = Processes(tmp_path)
    yield processes
    processes.cleanup()


def start_relay(processes: Processes, db_url: str, upstash_url: str, *args: str, **settings):
    env = relay_env(db_url, upstash_url, **settings)
    return processes.start("relay", *args, env=env)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def ack_results(upstash_url: str, rdb, jobs: list[dict], results: dict[str, str]) -> None:
    """The jobs claimed and acknowledged, each with its result (as a worker would)."""
    client = UpstashClient(Endpoint(EAST.code, upstash_url, EAST.token), retry_window=0)
    try:
        q = ConsumerQueue(client, EAST.code, "test-worker")
        for start in range(0, len(jobs), 500):
            push(rdb, *jobs[start : start + 500])
            claimed = (await q.claim(500)).jobs
            assert len(claimed) == len(jobs[start : start + 500])
            answers = await q.ack([(c.job_id, results[c.job_id]) for c in claimed])
            assert set(answers) == {1}
    finally:
        await client.aclose()


def result_json(job: dict, finished: float, *, ok: bool = True) -> str:
    return json.dumps(
        {
            "job_id": job["job_id"],
            "monitor_id": job["monitor_id"],
            "region": job["region"],
            "ok": ok,
            "status": 200 if ok else 503,
            "latency_ms": 12.5,
            "error": None if ok else "status_mismatch",
            "detail": "HTTP 200" if ok else "HTTP 503",
            "attempts": 1,
            "run": 1,
            "started_at": finished - 0.1,
            "finished_at": finished,
        }
    )


def slot_jobs(monitors: list[dict], slots: int) -> list[dict]:
    """One job per monitor and slot (one a minute, the latest a minute ago)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    jobs = []
    for k in range(slots):
        slot = now - timedelta(minutes=slots - k)
        for m in monitors:
            job = make_job("https://e.example/", EAST.code, interval_s=3600)
            job |= {"monitor_id": str(m["id"]), "scheduled_for": iso(slot)}
            jobs.append(job)
    return jobs


def history_on(conn) -> None:
    name = conn.execute("SELECT current_database() AS d").fetchone()["d"]
    conn.execute(f'ALTER DATABASE "{name}" SET pgpulse.results_history = on')


def test_results_land_once_per_slot_through_a_relay_killed_mid_ingest(
    conn, db_url, upstash62, rdb, stack
):
    history_on(conn)
    monitors = add_monitors(conn, 150)
    jobs = slot_jobs(monitors, 40)  # 6,000 results
    now = time.time()
    results = {j["job_id"]: result_json(j, now + i * 1e-3) for i, j in enumerate(jobs)}
    asyncio.run(ack_results(upstash62.url, rdb, jobs, results))
    assert rdb.llen(RESULTS) == len(jobs)

    def stored() -> int:
        return conn.execute("SELECT count(*) AS n FROM pgpulse.results_history").fetchone()["n"]

    settings = {"results_batch": 100, "results_lease_s": 1, "depth_interval_s": 0.1}
    first = start_relay(stack, db_url, upstash62.url, **settings)
    wait_for(lambda: stored() >= 1000, 60, "the first batches", on_timeout=first.tail)
    first.kill()  # mid-ingest: batches in PostgreSQL, more in Redis, maybe one in both
    left = rdb.llen(RESULTS)
    assert 0 < left and stored() < len(jobs), (left, stored())
    assert stored() + left >= len(jobs)  # nothing lost, perhaps one batch in both

    second = start_relay(stack, db_url, upstash62.url, **settings)
    wait_for(lambda: rdb.llen(RESULTS) == 0, 60, "the rest", on_timeout=second.tail)
    wait_for(lambda: stored() == len(jobs), 10, "every result", on_timeout=second.tail)
    assert second.stop() == 0
    rows = conn.execute(
        "SELECT job_id::text, region, checked_from, ok, status FROM pgpulse.results_history"
    ).fetchall()
    assert sorted(r["job_id"] for r in rows) == sorted(results)  # each once
    assert {(r["region"], r["checked_from"], r["ok"], r["status"]) for r in rows} == {
        (EAST.code, EAST.code, True, 200)
    }
    # the latest table: one row per monitor and region, its newest slot
    latest = conn.execute(
        "SELECT count(*) AS n, count(DISTINCT scheduled_for) AS slots,"
        " min(scheduled_for) AS slot FROM pgpulse.results_latest"
    ).fetchone()
    newest = datetime.fromisoformat(jobs[-1]["scheduled_for"].replace("Z", "+00:00"))
    assert (latest["n"], latest["slots"], latest["slot"]) == (150, 1, newest)

    # the same results pushed again (a relay killed after its commit, before its removal)
    # change nothing, however often
    before = conn.execute(
        "SELECT max(received_at) AS h, (SELECT max(received_at) FROM pgpulse.results_latest) AS l"
        " FROM pgpulse.results_history"
    ).fetchone()
    again = random.sample(jobs, 500)
    rdb.lpush(RESULTS, *[e for e in _entries(again, results)])
    third = start_relay(stack, db_url, upstash62.url, **settings)
    wait_for(lambda: rdb.llen(RESULTS) == 0, 30, "the copies", on_timeout=third.tail)
    assert third.stop() == 0
    assert third.has_event("relay_stopped", results=500)
    assert stored() == len(jobs)
    after = conn.execute(
        "SELECT max(received_at) AS h, (SELECT max(received_at) FROM pgpulse.results_latest) AS l"
        " FROM pgpulse.results_history"
    ).fetchone()
    assert after == before


def _entries(jobs: list[dict], results: dict[str, str]) -> list[str]:
    """Results list entries as the ack script writes them."""
    return [
        json.dumps(
            {
                "job_id": j["job_id"],
                "monitor_id": j["monitor_id"],
                "region": j["region"],
                "scheduled_for": j["scheduled_for"],
                "worker": "test-worker",
                "acked_ms": 1,
                "result": json.loads(results[j["job_id"]]),
            }
        )
        for j in jobs
    ]


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_malformed_result_is_counted_and_skipped(conn, db_url, upstash62, rdb, stack):
    monitors = add_monitors(conn, 3)
    jobs = slot_jobs(monitors, 1)
    now = time.time()
    results = {j["job_id"]: result_json(j, now) for j in jobs}
    results[jobs[1]["job_id"]] = "{not json"
    asyncio.run(ack_results(upstash62.url, rdb, jobs, results))
    port = free_port()
    relay = start_relay(
        stack, db_url, upstash62.url, "--http", f"127.0.0.1:{port}", depth_interval_s=0.1
    )
    wait_for(lambda: rdb.llen(RESULTS) == 0, 30, "the results drained", on_timeout=relay.tail)
    stored = conn.execute("SELECT monitor_id FROM pgpulse.results_latest").fetchall()
    assert {r["monitor_id"] for r in stored} == {monitors[0]["id"], monitors[2]["id"]}
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _metric(url, "pgpulse_results_ingested_total", region=EAST.code) == 2, 10)
    assert _metric(url, "pgpulse_results_malformed_total", region=EAST.code) == 1
    assert relay.has_event("results_malformed", region=EAST.code, count=1)
    (line,) = [e for e in relay.events() if e.get("event") == "results_malformed"]
    assert line["first"] == "not JSON (a result that is not JSON, from a worker)"
    assert relay.running()
    relay.signal(signal.SIGTERM)
    assert relay.wait(30) == 0
    assert relay.has_event("relay_stopped", results=2, results_malformed=1)


def test_the_results_cap_is_reached_and_survived(conn, db_url, upstash62, rdb, stack, targets):
    """A worker acknowledging with no relay draining: its region's results list stops at the
    cap (the oldest trimmed and counted), every ack succeeds; the relay later ingests what is
    there and says what was dropped."""
    monitors = add_monitors(conn, 30)
    workers = Workers(upstash62.url, stack.workdir)
    worker = workers.start(EAST, "--concurrency", "20", worker_results_cap=12)
    try:
        jobs = []
        for m in monitors:
            job = make_job(targets.url(f"/ok?{m['id']}"), EAST.code)
            jobs.append(job | {"monitor_id": str(m["id"])})
        push(rdb, *jobs)
        wait_for(
            lambda: all(rdb.zscore(f"pgpulse:done:{EAST.code}", j["job_id"]) for j in jobs),
            30,
            "every job acknowledged",
            on_timeout=worker.tail,
        )
        assert rdb.llen(RESULTS) == 12 and rdb.get(f"{RESULTS}:dropped") == "18"
        assert not [e for e in worker.events() if e.get("event") == "ack_failed"]
        port = free_port()
        relay = start_relay(
            stack, db_url, upstash62.url, "--http", f"127.0.0.1:{port}", depth_interval_s=0.1
        )
        wait_for(lambda: rdb.llen(RESULTS) == 0, 30, "the kept results", on_timeout=relay.tail)
        wait_for(lambda: relay.has_event("results_dropped", region=EAST.code, total=18), 10)
        url = f"http://127.0.0.1:{port}"
        assert _metric(url, "pgpulse_results_dropped", region=EAST.code) == 18
        count = conn.execute("SELECT count(*) AS n FROM pgpulse.results_latest").fetchone()["n"]
        assert count == 12
        # and past the cap the worker goes on: more jobs, more results, the relay drains them
        more = [
            make_job(targets.url(f"/ok?more{m['id']}"), EAST.code) | {"monitor_id": str(m["id"])}
            for m in monitors[:5]
        ]
        push(rdb, *more)
        wait_for(
            lambda: _metric(url, "pgpulse_results_ingested_total", region=EAST.code) == 17,
            30,
            "the new results",
            on_timeout=relay.tail,
        )
        assert worker.running() and relay.running()
    finally:
        workers.cleanup()


def test_a_stopped_relay_hands_the_results_over_at_once(conn, db_url, upstash62, rdb, stack):
    """SIGTERM releases the relay's lease on the region's results: the next relay drains at
    once, not after PGPULSE_RESULTS_LEASE_S (30 s here)."""
    monitors = add_monitors(conn, 4)
    first_jobs, later_jobs = slot_jobs(monitors[:2], 1), slot_jobs(monitors[2:], 1)
    now = time.time()
    results = {j["job_id"]: result_json(j, now) for j in first_jobs + later_jobs}
    asyncio.run(ack_results(upstash62.url, rdb, first_jobs, results))
    first = start_relay(stack, db_url, upstash62.url, depth_interval_s=0.1)
    wait_for(lambda: rdb.llen(RESULTS) == 0, 30, "the first results", on_timeout=first.tail)
    assert first.stop() == 0
    asyncio.run(ack_results(upstash62.url, rdb, later_jobs, results))
    second = start_relay(stack, db_url, upstash62.url, depth_interval_s=0.1)
    wait_for(lambda: rdb.llen(RESULTS) == 0, 10, "the next relay to drain", on_timeout=second.tail)
    assert second.stop() == 0
    count = conn.execute("SELECT count(*) AS n FROM pgpulse.results_latest").fetchone()["n"]
    assert count == 4
