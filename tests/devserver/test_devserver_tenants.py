"""One token reaches only its own database, by every path: plain commands, pipelines,
transactions and scripts (`redis.call` inside EVAL), and nothing all databases of the
redis-server share (the script cache, functions, the slow log, INFO, channels)."""

from __future__ import annotations

import pytest
import redis

from relay.devserver import DevServer, DevServerError

SELECT_AND_READ = "redis.call('SELECT', ARGV[1]) return redis.call('GET', KEYS[1])"
SELECT_AND_WRITE = "redis.call('SELECT', ARGV[1]) return redis.call('SET', KEYS[1], 'from-a')"


def error_of(response) -> str:
    body = response.json()
    assert "error" in body, f"not refused: {body}"
    return body["error"]


@pytest.fixture
def b_holds(client_b, creds, redis_db, key):
    """A key in token B's database; returns a check that it is still there, untouched."""
    client_b.post("/", json=["SET", key("b"), "secret-b"])

    def untouched() -> None:
        assert redis_db(creds.db_b).get(key("b")) == b"secret-b"
        assert redis_db(creds.db_b).dbsize() > 0

    return untouched


@pytest.mark.parametrize("script", [SELECT_AND_READ, SELECT_AND_WRITE])
def test_a_script_cannot_select_another_database(client, creds, key, b_holds, script):
    response = client.post("/", json=["EVAL", script, 1, key("b"), creds.db_b])
    assert "secret-b" not in response.text
    assert "can't run this command" in error_of(response)
    b_holds()


@pytest.mark.parametrize(
    "script",
    [
        "return redis.call('FLUSHALL')",
        "return redis.call('SWAPDB', ARGV[1], ARGV[2])",
        "return redis.call('MOVE', KEYS[1], ARGV[2])",
        "return redis.call('COPY', KEYS[1], KEYS[1], 'DB', ARGV[2])",
    ],
)
def test_a_script_cannot_flush_swap_move_or_copy_across_databases(
    client, creds, key, b_holds, redis_db, script
):
    client.post("/", json=["SET", key("b"), "from-a"])
    response = client.post("/", json=["EVAL", script, 1, key("b"), creds.db_a, creds.db_b])
    error_of(response)
    b_holds()
    assert redis_db(creds.db_a).get(key("b")) == b"from-a"


@pytest.mark.parametrize(
    "command",
    [
        ["SCRIPT", "FLUSH"],
        ["SCRIPT", "KILL"],
        ["FUNCTION", "FLUSH"],
        ["FUNCTION", "LIST"],
        ["SLOWLOG", "GET"],
        ["SLOWLOG", "RESET"],
        ["INFO", "keyspace"],
        ["PUBLISH", "chan", "x"],
        ["MEMORY", "STATS"],
        ["CONFIG", "GET", "*"],
        ["CLIENT", "LIST"],
        ["FLUSHALL", "SYNC"],
    ],
)
def test_server_wide_state_is_out_of_reach_directly_and_from_scripts(client, command):
    if command[0] != "FLUSHALL":  # FLUSHALL is served, as FLUSHDB (see test_devserver_regions)
        direct = client.post("/", json=command)
        assert direct.status_code == 400, direct.text
        error_of(direct)
        piped = client.post("/pipeline", json=[command, ["PING"]]).json()
        assert "error" in piped[0] and piped[1] == {"result": "PONG"}
    args = ", ".join(f"'{arg}'" for arg in command)
    scripted = client.post("/", json=["EVAL", f"return redis.call({args})", 0])
    error_of(scripted)


def test_another_tokens_scripts_survive_script_flush(client, client_b, redis_db, creds, key):
    sha = client_b.post("/", json=["SCRIPT", "LOAD", "return 'b-script'"]).json()["result"]
    client.post("/", json=["SCRIPT", "FLUSH"])
    client.post("/", json=["EVAL", "return redis.call('SCRIPT', 'FLUSH')", 0])
    assert client_b.post("/", json=["EVALSHA", sha, 0]).json() == {"result": "b-script"}


def test_the_slow_log_never_shows_another_tokens_commands(client, client_b, devserver_redis, key):
    direct = redis.Redis.from_url(devserver_redis.url)
    try:
        slower_than = direct.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
        direct.config_set("slowlog-log-slower-than", 0)  # log every command
        client_b.post("/", json=["SET", key("b"), "b-secret-in-slowlog"])
        for command in (["SLOWLOG", "GET", "128"], ["SLOWLOG", "GET"]):
            assert "b-secret-in-slowlog" not in client.post("/", json=command).text
        scripted = client.post("/", json=["EVAL", "return redis.call('SLOWLOG', 'GET', 128)", 0])
        assert "b-secret-in-slowlog" not in scripted.text
    finally:
        direct.config_set("slowlog-log-slower-than", slower_than)
        direct.close()


def test_what_stays_in_the_database_still_works(client, key):
    """The tenant user keeps every per-database command, including the dangerous-looking."""
    sha = client.post("/", json=["SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])"]).json()[
        "result"
    ]
    assert client.post("/", json=["EVALSHA", sha, 1, key()]).json() == {"result": 1}
    assert client.post("/", json=["SCRIPT", "EXISTS", sha]).json() == {"result": [1]}
    assert client.post("/", json=["KEYS", key() + "*"]).json() == {"result": [key()]}
    assert client.post("/", json=["SORT", key("none")]).json() == {"result": []}
    assert client.post("/", json=["MEMORY", "USAGE", key()]).json()["result"] > 0
    dumped = client.post("/", json=["DUMP", key()], headers={"Upstash-Encoding": "base64"}).json()
    assert "result" in dumped


def test_the_per_token_users_are_removed_when_the_server_stops(devserver_redis, redis_db):
    def tenant_users() -> set[str]:
        return {
            u.decode() if isinstance(u, bytes) else u
            for u in redis_db(0).acl_users()
            if (u.decode() if isinstance(u, bytes) else u).startswith("pgpulse-devserver-")
        }

    before = tenant_users()
    with DevServer(devserver_redis.url, {"tenant-test-token": 5}, admin_token=None):
        made = tenant_users() - before
        assert len(made) == 1 and next(iter(made)).endswith("-db5")
    assert tenant_users() == before


def test_a_redis_login_that_may_not_create_users_is_a_clear_error(devserver_redis, redis_db):
    admin = redis_db(0)
    admin.acl_setuser(
        "no-acl-login",
        enabled=True,
        passwords=["+pw-7f3e1a9c"],
        keys=["*"],
        commands=["+@all", "-acl"],
    )
    try:
        url = devserver_redis.url.replace("redis://", "redis://no-acl-login:pw-7f3e1a9c@")
        with pytest.raises(DevServerError, match="ACL SETUSER") as refused:
            DevServer(url, {"t-9c2e": 1}, admin_token=None).start()
        assert "pw-7f3e1a9c" not in str(refused.value)
    finally:
        admin.acl_deluser("no-acl-login")
