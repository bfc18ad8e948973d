"""The official upstash-redis SDK, with its defaults (base64 responses, read-your-writes
sync token), works against the dev server: sync and async clients."""

from __future__ import annotations

import hashlib

import pytest
from upstash_redis import Redis
from upstash_redis.asyncio import Redis as AsyncRedis
from upstash_redis.errors import UpstashError

PUSH_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return redis.call('LPUSH', KEYS[2], ARGV[1])
end
return 0
"""


@pytest.fixture
def sdk(devserver, creds):
    client = Redis(url=devserver.url, token=creds.token_a, allow_telemetry=False)
    yield client
    client.close()


@pytest.fixture
async def async_sdk(devserver, creds):
    async with AsyncRedis(url=devserver.url, token=creds.token_a, allow_telemetry=False) as client:
        yield client


def test_sdk_defaults_are_base64_and_read_your_writes(sdk):
    assert sdk._headers.get("Upstash-Encoding") == "base64"
    assert sdk._read_your_writes is True


def test_strings(sdk, key):
    assert sdk.set(key("s"), "héllo ✓ wörld") is True
    assert sdk.get(key("s")) == "héllo ✓ wörld"
    assert sdk.get(key("missing")) is None
    assert sdk.incr(key("n")) == 1
    assert sdk.incrby(key("n"), 41) == 42
    assert sdk.mset({key("a"): "1", key("b"): "OK"}) is True
    assert sdk.mget(key("a"), key("b"), key("missing")) == ["1", "OK", None]
    assert sdk.set(key("ttl"), "v", ex=100) is True
    assert 0 < sdk.ttl(key("ttl")) <= 100
    assert sdk.strlen(key("s")) == len("héllo ✓ wörld".encode())
    with pytest.raises(UpstashError, match="not an integer"):
        sdk.incr(key("s"))


def test_sync_token_is_kept_and_changes(sdk, key):
    sdk.set(key(), "1")
    first = sdk._sync_token
    sdk.set(key(), "2")
    assert first and sdk._sync_token and sdk._sync_token != first


def test_lists(sdk, key):
    assert sdk.lpush(key("l"), "a", "b", "c") == 3
    assert sdk.rpush(key("l"), "z") == 4
    assert sdk.lrange(key("l"), 0, -1) == ["c", "b", "a", "z"]
    assert sdk.llen(key("l")) == 4
    assert sdk.lpop(key("l")) == "c"
    assert sdk.rpop(key("l")) == "z"
    assert sdk.lrange(key("empty"), 0, -1) == []


def test_pipeline(sdk, key):
    pipe = sdk.pipeline()
    pipe.set(key("p"), "v")
    pipe.incr(key("c"))
    pipe.lpush(key("l"), "x", "y")
    pipe.get(key("p"))
    pipe.lrange(key("l"), 0, -1)
    assert pipe.exec() == [True, 1, 2, "v", ["y", "x"]]


def test_pipeline_error_is_raised_by_the_sdk(sdk, key):
    sdk.set(key("s"), "text")
    pipe = sdk.pipeline()
    pipe.get(key("s"))
    pipe.incr(key("s"))
    with pytest.raises(UpstashError, match="not an integer"):
        pipe.exec()


def test_transaction(sdk, key):
    tx = sdk.multi()
    tx.set(key("t"), "1")
    tx.incr(key("t"))
    tx.get(key("t"))
    assert tx.exec() == [True, 2, "2"]
    assert sdk.get(key("t")) == "2"


def test_eval_evalsha_and_script_load(sdk, key):
    assert sdk.eval("return ARGV[1] .. KEYS[1]", keys=["k"], args=["a"]) == "ak"
    assert sdk.eval("return {1, 2, 'three'}") == [1, 2, "three"]
    sha = sdk.script_load(PUSH_SCRIPT)
    assert sha == hashlib.sha1(PUSH_SCRIPT.encode()).hexdigest()
    assert sdk.evalsha(sha, keys=[key("dedup"), key("jobs")], args=['{"job": 1}', "60"]) == 1
    assert sdk.evalsha(sha, keys=[key("dedup"), key("jobs")], args=['{"job": 1}', "60"]) == 0
    assert sdk.lrange(key("jobs"), 0, -1) == ['{"job": 1}']
    with pytest.raises(UpstashError, match="NOSCRIPT"):
        sdk.evalsha("0" * 40)


async def test_async_strings_and_lists(async_sdk, key):
    assert await async_sdk.set(key("s"), "värde") is True
    assert await async_sdk.get(key("s")) == "värde"
    assert await async_sdk.rpush(key("l"), "1", "2") == 2
    assert await async_sdk.lrange(key("l"), 0, -1) == ["1", "2"]
    assert async_sdk._sync_token


async def test_async_pipeline_and_transaction(async_sdk, key):
    pipe = async_sdk.pipeline()
    pipe.set(key("a"), "x")
    pipe.get(key("a"))
    assert await pipe.exec() == [True, "x"]
    tx = async_sdk.multi()
    tx.incr(key("n"))
    tx.incr(key("n"))
    assert await tx.exec() == [1, 2]


async def test_async_eval_and_evalsha(async_sdk, key):
    sha = await async_sdk.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await async_sdk.evalsha(sha, keys=[key("n")], args=["5"]) == 5
    assert await async_sdk.eval("return redis.call('GET', KEYS[1])", keys=[key("n")]) == "5"
