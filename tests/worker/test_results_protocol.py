"""The results half of the consumer protocol on a dev server that refuses what Redis added
after 6.2: the ack script keeps each acknowledged job's result with the job's identity on a
capped list (past the cap the oldest are trimmed and counted, the ack never fails); the
relay's take and done scripts remove a batch only once it is stored, only what the cap did
not trim already, never twice, and only by the relay holding the region's lease. The sample
script sees the region as the relay judges it (relay.delivery.worker_presence)."""

from __future__ import annotations

import json
import re

import pytest

from relay.config import Endpoint
from relay.delivery.results import results_keys
from relay.delivery.upstash import UpstashClient
from relay.delivery.worker_presence import ALIVE_MS, Sample, judge, sample_keys
from relay.worker.protocol import ConsumerQueue, Scripts, script_text
from tests.support.worker import WORKER_REGIONS, make_job, push

REGION = WORKER_REGIONS[0]
RESULTS = f"pgpulse:results:{REGION.code}"
DROPPED = f"{RESULTS}:dropped"
SCRIPTS = ("ack", "claim", "results_take", "results_done", "sample")
# Every command the scripts call, each available in Redis 6.2 (LMPOP, ZMPOP, ... are not).
REDIS_6_2 = {"TIME", "ZADD", "ZREMRANGEBYSCORE", "ZRANGEBYSCORE", "ZREM", "HGET", "HSET"}
REDIS_6_2 |= {"HDEL", "HEXISTS", "EXISTS", "SET", "RPOP", "INCRBY", "LPUSH", "LLEN", "LTRIM"}
REDIS_6_2 |= {"GET", "LRANGE", "DEL", "LINDEX", "ZCARD", "ZREVRANGE", "ZCOUNT", "ZSCORE"}


@pytest.fixture
async def client(upstash62):
    c = UpstashClient(Endpoint(REGION.code, upstash62.url, REGION.token), retry_window=0)
    yield c
    await c.aclose()


def result_of(job: dict, **fields) -> str:
    return json.dumps({"job_id": job["job_id"], "ok": True, "status": 200, **fields})


async def run_jobs(q: ConsumerQueue, rdb, n: int, **job_options) -> list[dict]:
    """n jobs pushed, claimed and acknowledged with a result each, in that order."""
    jobs = [make_job("https://e.example/", **job_options) for _ in range(n)]
    push(rdb, *jobs)
    claimed = (await q.claim(n)).jobs
    assert len(claimed) == n
    by_id = {j["job_id"]: j for j in jobs}
    order = [by_id[c.job_id] for c in claimed]
    for job in order:  # one ack each: the list's order is the acks' order
        assert await q.ack([(job["job_id"], result_of(job))]) == [1]
    return order


def test_the_new_scripts_call_only_redis_6_2_commands():
    for name in SCRIPTS:
        called = set(re.findall(r"redis\.p?call\('([A-Za-z]+)'", script_text(name)))
        assert called and {c.upper() for c in called} <= REDIS_6_2, (name, called)


async def test_an_ack_keeps_the_result_with_the_jobs_identity(client, rdb):
    q = ConsumerQueue(client, REGION.code, "w1")
    job = make_job("https://e.example/", slot_regions=["wk-east", "wk-west"])
    none = make_job("https://e.example/")
    push(rdb, job, none)
    assert len((await q.claim(5)).jobs) == 2
    assert await q.ack([(job["job_id"], result_of(job)), (none["job_id"], "")]) == [1, 1]
    # acknowledged before: not in flight, its result is not kept
    assert await q.ack([(job["job_id"], result_of(job))]) == [0]
    (entry,) = [json.loads(e) for e in rdb.lrange(RESULTS, 0, -1)]
    assert entry["result"] == json.loads(result_of(job))
    for key in ("job_id", "monitor_id", "region", "scheduled_for", "slot_regions"):
        assert entry[key] == job[key], key
    assert entry["worker"] == "w1" and entry["acked_ms"] > 0


async def test_past_the_cap_the_oldest_results_go_counted_and_acks_never_fail(client, rdb):
    q = ConsumerQueue(client, REGION.code, "w1", results_cap=5)
    jobs = await run_jobs(q, rdb, 12)
    kept = [json.loads(e)["job_id"] for e in rdb.lrange(RESULTS, 0, -1)]
    assert kept == [j["job_id"] for j in reversed(jobs[-5:])]  # the newest, newest first
    assert rdb.get(DROPPED) == "7"
    assert all(rdb.zscore(f"pgpulse:done:{REGION.code}", j["job_id"]) for j in jobs)
    # a cap of 0 keeps none
    off = ConsumerQueue(client, REGION.code, "w1", results_cap=0)
    await run_jobs(off, rdb, 2)
    assert rdb.llen(RESULTS) == 5 and rdb.get(DROPPED) == "7"


async def take(scripts: Scripts, relay: str, batch: int, n: int) -> tuple[int, int, list[str]]:
    reply = await scripts.call("results_take", results_keys(REGION.code), [relay, batch, n, 10_000])
    return int(reply[0]), int(reply[1]), reply[3:]


async def done(scripts: Scripts, relay: str, batch, n: int, dropped: int, release=0) -> int:
    return await scripts.call(
        "results_done", results_keys(REGION.code), [relay, batch, n, dropped, release]
    )


async def test_a_batch_is_removed_once_only_by_its_relay_and_not_what_the_cap_took(client, rdb):
    q = ConsumerQueue(client, REGION.code, "w1", results_cap=10)
    jobs = await run_jobs(q, rdb, 8)
    scripts = Scripts(client, REGION.code)
    held, dropped, batch = await take(scripts, "relay-a", 1, 3)
    assert held == 1 and dropped == 0
    assert [json.loads(e)["job_id"] for e in batch] == [j["job_id"] for j in reversed(jobs[:3])]
    # another relay waits while relay-a holds the region's lease
    assert (await take(scripts, "relay-b", 1, 3))[0] == 0
    # meanwhile acks go past the cap: the oldest two (of relay-a's batch) are trimmed
    newer = await run_jobs(q, rdb, 4)
    assert rdb.get(DROPPED) == "2"
    assert await done(scripts, "relay-a", 1, 3, dropped) == 1  # the one the cap left
    assert await done(scripts, "relay-a", 1, 3, dropped) == -1  # repeated: nothing more
    left = [json.loads(e)["job_id"] for e in rdb.lrange(RESULTS, 0, -1)]
    assert left == [j["job_id"] for j in reversed(jobs[3:] + newer)]
    # a stale batch number removes nothing; the release lets relay-b in at once
    assert await done(scripts, "relay-a", 7, 3, 2) == -1
    assert await done(scripts, "relay-a", "stop", 0, 0, release=1) == -1
    held, _, batch = await take(scripts, "relay-b", 1, 100)
    assert held == 1 and len(batch) == 9
    assert await done(scripts, "relay-b", 1, len(batch), 2) == 9
    assert rdb.llen(RESULTS) == 0
    # nothing to drain holds nothing: another relay takes over at once (a stopped relay's
    # lease kept the next relay waiting PGPULSE_RESULTS_LEASE_S)
    assert (await take(scripts, "relay-b", 2, 100))[0] == 1
    await run_jobs(q, rdb, 1)
    assert (await take(scripts, "relay-a", 2, 100))[0] == 1
    assert (await take(scripts, "relay-b", 3, 100))[0] == 0
    assert await done(scripts, "relay-a", "stop", 0, 0, release=1) == -1  # stopping
    assert (await take(scripts, "relay-b", 3, 100))[0] == 1


async def test_the_sample_tells_absent_workers_from_slow_ones(client, rdb):
    scripts = Scripts(client, REGION.code)

    async def sample() -> Sample:
        return Sample.from_reply(await scripts.call("sample", sample_keys(REGION.code), [ALIVE_MS]))

    never = await sample()
    assert (never.workers_known, never.depth, never.oldest_ms) == (0, 0, -1)
    push(rdb, make_job("https://e.example/", scheduled_in_s=-100, interval_s=600))  # waited 100 s
    assert not judge(await sample(), 60).absent  # never had workers: a v1 consumer's region

    q = ConsumerQueue(client, REGION.code, "w1")
    await q.claim(0)  # a heartbeat, no job taken
    s = await sample()
    assert (s.workers_known, s.alive, s.depth) == (1, 1, 1)
    assert 99_000 < s.now_ms - s.oldest_ms < 110_000
    verdict = judge(s, 60)
    assert verdict.absent and "no worker took one (none ever)" in verdict.reason
    assert not judge(s, 200).absent  # it has not waited that long

    await q.claim(1)  # takes it: slow, not absent
    push(rdb, make_job("https://e.example/", scheduled_in_s=-90, interval_s=600))
    verdict = judge(await sample(), 60)
    assert (verdict.absent, verdict.slow) == (False, True)

    rdb.zadd(f"pgpulse:workers:{REGION.code}", {"w1": s.now_ms - 120_000})  # silent 2 min
    verdict = judge(await sample(), 60)
    assert verdict.absent and "no worker heartbeat for 12" in verdict.reason
