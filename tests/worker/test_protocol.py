"""The queue contract's v2 scripts (relay/scripts/claim.lua, ack.lua) on a dev server that
refuses what Redis added after 6.2: the weighted round, expired / malformed / duplicate jobs,
leases that run out, the runs cap, heartbeats, acks; and v1 consumers still get every job."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re

import pytest

from relay.config import Endpoint
from relay.delivery.queue import CRITICALITIES
from relay.delivery.upstash import UpstashClient
from relay.errors import PublishError
from relay.worker.protocol import ConsumerQueue, done_key, live_workers, script_text
from tests.support.worker import WORKER_REGIONS, eventually, make_job, push

REGION = WORKER_REGIONS[0]

# Every command the scripts call, each available in Redis 6.2 (LMPOP, ZMPOP, ... are not).
REDIS_6_2 = {
    "TIME",
    "ZADD",
    "ZREMRANGEBYSCORE",
    "ZRANGEBYSCORE",
    "ZREM",
    "HGET",
    "HSET",
    "HDEL",
    "HEXISTS",
    "ZSCORE",
    "RPOP",
    "SET",  # the claim notes when it last took a job
    "INCRBY",
    "LPUSH",  # the ack keeps results, capped
    "LLEN",
    "LTRIM",
}


@pytest.fixture
async def client(upstash62):
    c = UpstashClient(Endpoint(REGION.code, upstash62.url, REGION.token), retry_window=0)
    yield c
    await c.aclose()


async def jobs_of(q: ConsumerQueue):
    return (await q.claim(5)).jobs


async def failed_of(q: ConsumerQueue):
    return (await q.claim(5)).failed


def queue(client, worker="w1", **options) -> ConsumerQueue:
    return ConsumerQueue(client, REGION.code, worker, **options)


def test_the_scripts_call_only_redis_6_2_commands():
    for name in ("claim", "ack"):
        called = set(re.findall(r"redis\.p?call\('([A-Za-z]+)'", script_text(name)))
        assert called and {c.upper() for c in called} <= REDIS_6_2, (name, called)


async def test_the_dev_server_refuses_newer_commands_directly_and_in_scripts(client):
    with pytest.raises(PublishError, match="(?i)lmpop"):
        await client.command("LMPOP", "1", "k", "LEFT")
    with pytest.raises(PublishError, match="can.t run this command"):
        await client.command("EVAL", "return redis.call('LMPOP', '1', KEYS[1], 'LEFT')", 1, "k")
    assert await client.command("RPOP", "k", 2) is None  # 6.2's RPOP count is fine


async def test_the_dev_server_refuses_scripts_touching_keys_not_in_keys(client, upstash62):
    touch_other = "redis.call('SET', KEYS[1], 1) return redis.call('GET', 'elsewhere:' .. ARGV[1])"
    with pytest.raises(PublishError, match="undeclared key: elsewhere:x"):
        await client.command("EVAL", touch_other, 1, "k", "x")
    # as a client knows it: SCRIPT LOAD answers its script's SHA1, EVALSHA runs it guarded
    sha = await client.command("SCRIPT", "LOAD", touch_other)
    assert sha == hashlib.sha1(touch_other.encode()).hexdigest()
    assert await client.command("SCRIPT", "EXISTS", sha) == [1]
    with pytest.raises(PublishError, match="undeclared key: elsewhere:y"):
        await client.command("EVALSHA", sha, 1, "k", "y")
    (refused,) = await client.pipeline([["EVALSHA", sha, "1", "k", "z"]])
    assert "undeclared key: elsewhere:z" in refused["error"]
    # every key passed in KEYS, by any command (pcall too): fine
    declared = (
        "redis.pcall('SET', KEYS[2], ARGV[1]) redis.call('ZADD', KEYS[1], 1, 'm') "
        "return {redis.call('TIME')[1] ~= nil, redis.call('GET', KEYS[2])}"
    )
    assert await client.command("EVAL", declared, 2, "z", "s", "v") == [1, "v"]


async def test_claim_and_ack_touch_only_the_keys_they_declare(client, rdb):
    """Upstash: every key a script touches arrives through KEYS (a key built inside the
    script is refused under allow-key-locking, read from disk under the lock otherwise).
    The dev server here refuses any other key: every path of both scripts runs on it."""
    q = queue(client, lease_margin_ms=200, max_runs=1)
    done, lapsing = make_job("https://e.example/"), make_job("https://e.example/", timeout_ms=100)
    push(rdb, done, lapsing)
    assert len((await q.claim(5)).jobs) == 2
    assert await q.ack([(done["job_id"], "")]) == [1]
    push(rdb, done)  # already run: skipped by its done marker
    assert (await q.claim(5)).duplicates == 1
    failed = await eventually(lambda: failed_of(q), "the lease to run out")  # out of runs
    assert [f.job_id for f in failed] == [lapsing["job_id"]]
    push(rdb, lapsing)
    assert (await q.claim(5)).duplicates == 1


async def test_a_claim_takes_critical_first_and_never_starves_low(client, rdb):
    for c in CRITICALITIES:
        push(rdb, *(make_job("https://e.example/", criticality=c) for _ in range(40)))
    q = queue(client)
    first = await q.claim(15)
    kinds = collections.Counter(json.loads(j.body)["criticality"] for j in first.jobs)
    assert kinds == {"critical": 8, "high": 4, "normal": 2, "low": 1}
    # one job per call: the round goes on from call to call, low gets its place
    singles = collections.Counter()
    for _ in range(15):
        (job,) = (await q.claim(1)).jobs
        singles[json.loads(job.body)["criticality"]] += 1
    assert singles == {"critical": 8, "high": 4, "normal": 2, "low": 1}
    # an empty list's places go to the others, critical first
    rdb.delete(f"pgpulse:jobs:{REGION.code}:high", f"pgpulse:jobs:{REGION.code}:normal")
    rest = collections.Counter(json.loads(j.body)["criticality"] for j in (await q.claim(15)).jobs)
    assert rest == {"critical": 14, "low": 1}


async def test_expired_malformed_and_duplicate_jobs_are_dropped_and_counted(client, rdb):
    good = make_job("https://e.example/")
    push(
        rdb,
        make_job("https://e.example/", scheduled_in_s=-120, interval_s=60),  # expired
        "not json",
        json.dumps({"job_id": "x"}),  # no expires_at
        good,
        good,  # the same job twice
    )
    q = queue(client)
    claim = await q.claim(10)
    assert (claim.expired, claim.malformed, claim.duplicates) == (1, 2, 1)
    assert [j.job_id for j in claim.jobs] == [good["job_id"]]
    assert claim.jobs[0].run == 1
    assert await q.ack([(good["job_id"], "")]) == [1]
    assert await q.ack([(good["job_id"], "")]) == [0]  # acknowledged once
    # a copy pushed after it ran is skipped: its done marker lives until expires_at + 60 s
    push(rdb, good)
    again = await q.claim(10)
    assert (again.jobs, again.duplicates) == ([], 1)
    (now_s, now_us) = rdb.time()
    skipped_for_ms = rdb.zscore(done_key(REGION.code), good["job_id"]) - (
        now_s * 1000 + now_us / 1000
    )
    assert 60_000 < skipped_for_ms <= 120_000


async def test_a_lapsed_lease_brings_the_job_back_and_the_runs_are_capped(client, rdb):
    job = make_job("https://e.example/", timeout_ms=100, max_attempts=2, delay_ms=100)
    push(rdb, job)
    w1 = queue(client, "w1", lease_margin_ms=200, max_runs=2)
    w2 = queue(client, "w2", lease_margin_ms=200, max_runs=2)
    (first,) = (await w1.claim(5)).jobs
    # the lease is timeout x attempts + delays + margin: 100 x 2 + 100 + 200 ms
    claim_now = first.deadline_ms - 500
    assert (await w2.claim(5)).jobs == []  # held by w1
    (second,) = await eventually(lambda: jobs_of(w2), "the lease to run out")
    assert (second.job_id, second.run) == (job["job_id"], 2)
    assert second.deadline_ms >= claim_now + 500
    # w1 was too slow: its late ack still ends the job, and says someone else held it
    assert await w1.ack([(job["job_id"], "")]) == [2]
    assert rdb.zcard(f"pgpulse:inflight:{REGION.code}") == 0

    # out of runs: reported failed to run, never handed out again
    other = make_job("https://e.example/", timeout_ms=100)
    push(rdb, other)
    (run1,) = (await w1.claim(5)).jobs
    (run2,) = await eventually(lambda: jobs_of(w2), "the lease to run out")
    assert run2.run == 2
    failed = await eventually(lambda: failed_of(w1), "the second lease to run out")
    assert [(f.job_id, f.run) for f in failed] == [(other["job_id"], 2)]
    assert rdb.zscore(done_key(REGION.code), other["job_id"])
    assert rdb.hlen(f"pgpulse:inflight:{REGION.code}:jobs") == 0


async def test_heartbeats_show_live_workers_per_region(client, upstash62):
    await queue(client, "w-a").claim(0)
    await queue(client, "w-b").claim(3)
    assert sorted(await live_workers(client, REGION.code)) == ["w-a", "w-b"]
    other = UpstashClient(Endpoint(WORKER_REGIONS[1].code, upstash62.url, WORKER_REGIONS[1].token))
    try:
        assert await live_workers(other, WORKER_REGIONS[1].code) == []
    finally:
        await other.aclose()
    await asyncio.sleep(0.01)
    assert await live_workers(client, REGION.code, within_s=0.005) == []


async def test_a_v1_consumer_popping_the_lists_still_gets_every_job(client, rdb):
    jobs = [make_job("https://e.example/", criticality=c) for c in CRITICALITIES for _ in range(5)]
    push(rdb, *jobs)
    popped = []
    for c in CRITICALITIES:
        while (
            value := await client.command("RPOP", f"pgpulse:jobs:{REGION.code}:{c}")
        ) is not None:
            popped.append(json.loads(value)["job_id"])
    assert sorted(popped) == sorted(j["job_id"] for j in jobs)
