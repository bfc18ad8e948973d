"""Several regions from one server: each token is its own Redis database."""

from __future__ import annotations


def test_a_key_written_with_one_token_is_invisible_to_another(client, client_b, key):
    assert client.post("/", json=["SET", key(), "from-a"]).json() == {"result": "OK"}
    assert client_b.post("/", json=["GET", key()]).json() == {"result": None}
    assert client_b.post("/", json=["SET", key(), "from-b"]).json() == {"result": "OK"}
    assert client.post("/", json=["GET", key()]).json() == {"result": "from-a"}
    assert client_b.post("/", json=["GET", key()]).json() == {"result": "from-b"}


def test_each_token_writes_to_its_own_database(client, client_b, http_client, creds, redis_db, key):
    client.post("/pipeline", json=[["LPUSH", key("q"), "a1"]])
    client_b.post("/multi-exec", json=[["LPUSH", key("q"), "b1"]])
    http_client(creds.token_c).get(f"/lpush/{key('q')}/c1")
    assert redis_db(creds.db_a).lrange(key("q"), 0, -1) == [b"a1"]
    assert redis_db(creds.db_b).lrange(key("q"), 0, -1) == [b"b1"]
    assert redis_db(creds.db_c).lrange(key("q"), 0, -1) == [b"c1"]
    assert redis_db(0).exists(key("q")) == 0


def test_scripts_run_in_the_tokens_database(client, client_b, creds, redis_db, key):
    script = "return redis.call('SET', KEYS[1], ARGV[1])"
    client.post("/", json=["EVAL", script, 1, key(), "via-a"])
    assert redis_db(creds.db_a).get(key()) == b"via-a"
    assert client_b.post("/", json=["GET", key()]).json() == {"result": None}


def test_flushall_only_empties_the_tokens_database(http_client, client_b, creds, redis_db, key):
    # token C's database is flushed here, so only this test writes to it
    http_c = http_client(creds.token_c)
    http_c.post("/", json=["SET", key(), "c"])
    client_b.post("/", json=["SET", key(), "b"])
    assert http_c.post("/", json=["FLUSHALL"]).json() == {"result": "OK"}
    assert http_c.post("/", json=["DBSIZE"]).json() == {"result": 0}
    assert redis_db(creds.db_b).get(key()) == b"b"


def test_select_cannot_escape_the_tokens_database(client, client_b, key):
    client_b.post("/", json=["SET", key(), "secret-b"])
    refused = client.post("/pipeline", json=[["SELECT", 2], ["GET", key()]]).json()
    assert refused[0]["error"].startswith("ERR Command is not available: 'SELECT'")
    assert refused[1] == {"result": None}
    assert client.post("/", json=["MOVE", key(), 2]).status_code == 400
