"""Upstash's wire contract, request by request, with raw HTTP: statuses, shapes, headers."""

from __future__ import annotations

import base64
import threading

import pytest

from relay.devserver import MAX_REQUEST_BYTES

UNAUTHORIZED = {
    "error": "WRONGPASS invalid or missing auth token. See "
    "https://docs.upstash.com/redis/troubleshooting/http_unauthorized for details."
}


def not_available(name: str) -> str:
    return (
        f"ERR Command is not available: '{name}'. "
        "See https://upstash.com/docs/redis/overall/rediscompatibility for details"
    )


# -- auth -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/pipeline", "/multi-exec", "/get/k"])
def test_missing_token_is_401(anonymous, path):
    response = anonymous.post(path, json=["PING"] if path == "/" else [["PING"]])
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert "upstash-sync-token" not in response.headers


# a token is compared in constant time against every known one: near misses of a real
# token (one character off, a prefix, a suffix, the padded one without its padding) and
# bytes that are not UTF-8 are refused like any other wrong token
@pytest.mark.parametrize(
    "token",
    [
        b"not-a-token",
        b"token-region-A",
        b"token-region-",
        b"token-region-aa",
        b"AYNgAS2553feg6a2d9842h2a0gcdb5f8efe9934DQ",
        b"token-region-\xe9",
    ],
)
def test_wrong_bearer_token_is_401(anonymous, http_client, creds, token):
    response = anonymous.post("/", json=["PING"], headers={"Authorization": b"Bearer " + token})
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    # and the right one still works on the same server
    assert http_client(creds.token_a).post("/", json=["PING"]).json() == {"result": "PONG"}


def test_wrong_scheme_is_401(anonymous, creds):
    response = anonymous.post(
        "/", json=["PING"], headers={"Authorization": f"Basic {creds.token_a}"}
    )
    assert response.status_code == 401


def test_query_token_works_and_wrong_one_is_401(anonymous, creds):
    ok = anonymous.get("/echo/hi", params={"_token": creds.token_a})
    assert (ok.status_code, ok.json()) == (200, {"result": "hi"})
    bad = anonymous.get("/echo/hi", params={"_token": "nope"})
    assert (bad.status_code, bad.json()) == (401, UNAUTHORIZED)


def test_padded_token_works_in_header_and_query(http_client, anonymous, creds):
    assert creds.token_c.endswith("=")
    assert http_client(creds.token_c).post("/", json=["PING"]).json() == {"result": "PONG"}
    assert anonymous.get("/ping", params={"_token": creds.token_c}).json() == {"result": "PONG"}


# -- methods ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/get/k", "/pipeline"])
def test_other_methods_are_405(client, method, path):
    response = client.request(method, path)
    assert response.status_code == 405
    assert isinstance(response.json()["error"], str)


def test_pipeline_and_transaction_need_post(client):
    assert client.get("/pipeline").status_code == 405
    assert client.get("/multi-exec").status_code == 405


def test_put_is_like_post(client, key):
    assert client.put("/", json=["SET", key(), "v"]).json() == {"result": "OK"}
    assert client.put("/pipeline", json=[["GET", key()]]).json() == [{"result": "v"}]


def test_head_answers_without_body(client, key):
    response = client.head("/ping")
    assert response.status_code == 200
    assert response.content == b""


# -- results and errors -----------------------------------------------------------


def test_result_types_map_to_json(client, key):
    client.post("/", json=["RPUSH", key("l"), "a", "b"])
    assert client.post("/", json=["SET", key(), "v"]).json() == {"result": "OK"}
    assert client.post("/", json=["GET", key()]).json() == {"result": "v"}
    assert client.post("/", json=["GET", key("missing")]).json() == {"result": None}
    assert client.post("/", json=["INCR", key("n")]).json() == {"result": 1}
    assert client.post("/", json=["LRANGE", key("l"), 0, -1]).json() == {"result": ["a", "b"]}
    assert client.post("/", json=["MGET", key(), key("missing")]).json() == {"result": ["v", None]}


def test_failed_single_command_is_400_with_error(client, key):
    wrong_arity = client.post("/", json=["GET"])
    assert wrong_arity.status_code == 400
    assert wrong_arity.json() == {"error": "ERR wrong number of arguments for 'get' command"}
    client.post("/", json=["SET", key(), "text"])
    wrong_type = client.post("/", json=["LPUSH", key(), "x"])
    assert wrong_type.status_code == 400
    assert wrong_type.json()["error"].startswith("WRONGTYPE")
    assert "upstash-sync-token" in wrong_type.headers


def test_unknown_command_uses_upstash_text(client):
    response = client.post("/", json=["NOSUCHCOMMAND", "a"])
    assert response.status_code == 400
    assert response.json() == {"error": not_available("NOSUCHCOMMAND")}


def test_numbers_and_booleans_are_sent_as_their_json_text(client, key):
    client.post(
        "/",
        content=f'["MSET", "{key("i")}", 12, "{key("f")}", 1.5, "{key("b")}", true, '
        f'"{key("e")}", 1e3]',
    )
    values = client.post("/", json=["MGET", key("i"), key("f"), key("b"), key("e")]).json()
    assert values == {"result": ["12", "1.5", "true", "1e3"]}


def test_invalid_utf8_is_replaced_without_base64(client, redis_db, creds, key):
    redis_db(creds.db_a).set(key(), b"ok\xff\xfe")
    assert client.post("/", json=["GET", key()]).json() == {"result": "ok\ufffd\ufffd"}


# -- base64 -----------------------------------------------------------------------


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


def test_base64_encodes_every_string_except_ok(client, redis_db, creds, key):
    headers = {"Upstash-Encoding": "base64"}
    assert client.post("/", json=["SET", key(), "bar"], headers=headers).json() == {"result": "OK"}
    assert client.post("/", json=["GET", key()], headers=headers).json() == {"result": b64(b"bar")}
    assert client.post("/", json=["PING"], headers=headers).json() == {"result": b64(b"PONG")}
    redis_db(creds.db_a).set(key("bin"), b"\x00\xff\xfe binary")
    assert client.get(f"/get/{key('bin')}", headers=headers).json() == {
        "result": b64(b"\x00\xff\xfe binary")
    }
    client.post("/", json=["RPUSH", key("l"), "x", "ü"])
    nested = client.post(
        "/", json=["EVAL", "return {KEYS[1], 7, {ARGV[1]}, false}", 1, "k", "v"], headers=headers
    ).json()
    assert nested == {"result": [b64(b"k"), 7, [b64(b"v")], None]}
    listing = client.post("/", json=["LRANGE", key("l"), 0, -1], headers=headers).json()
    assert listing == {"result": [b64(b"x"), b64("ü".encode())]}
    assert client.post("/", json=["INCR", key("n")], headers=headers).json() == {"result": 1}
    assert client.post("/", json=["GET", key("none")], headers=headers).json() == {"result": None}


def test_base64_in_pipeline_and_errors_stay_plain(client, key):
    response = client.post(
        "/pipeline",
        headers={"Upstash-Encoding": "base64"},
        json=[["SET", key(), "v"], ["GET", key()], ["INCR", key()]],
    )
    assert response.json() == [
        {"result": "OK"},
        {"result": b64(b"v")},
        {"error": "ERR value is not an integer or out of range"},
    ]


# -- sync token -------------------------------------------------------------------


def test_sync_token_header_is_returned_and_changes(client):
    first = client.post("/", json=["PING"])
    second = client.post(
        "/", json=["PING"], headers={"Upstash-Sync-Token": first.headers["upstash-sync-token"]}
    )
    assert first.headers["upstash-sync-token"]
    assert second.status_code == 200
    assert second.headers["upstash-sync-token"] != first.headers["upstash-sync-token"]


@pytest.mark.parametrize("value", ["", "garbage", "0" * 200])
def test_any_sync_token_is_accepted(client, value):
    response = client.post("/pipeline", json=[["PING"]], headers={"Upstash-Sync-Token": value})
    assert response.status_code == 200
    assert response.headers["upstash-sync-token"]


# -- request size -----------------------------------------------------------------


def test_body_over_10_mb_is_refused(client):
    body = b'["ECHO", "' + b"x" * MAX_REQUEST_BYTES + b'"]'
    response = client.post("/", content=body)
    assert response.status_code == 400
    assert response.json() == {
        "error": f"ERR max request size exceeded. Limit: {MAX_REQUEST_BYTES} bytes, "
        f"Actual: {len(body)} bytes"
    }
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}


def test_streamed_body_over_10_mb_is_refused(client):
    def chunks():
        for _ in range(12):
            yield b"x" * (1024 * 1024)

    response = client.post("/", content=chunks())
    assert response.status_code == 400
    assert response.json()["error"].startswith("ERR max request size exceeded")


def test_body_just_under_10_mb_is_served(client, key):
    value = "v" * (MAX_REQUEST_BYTES - 1000)
    response = client.post("/", json=["SET", key(), value])
    assert response.json() == {"result": "OK"}
    assert client.post("/", json=["STRLEN", key()]).json() == {"result": len(value)}


def test_response_over_10_mb_is_refused(client, key):
    value = "v" * (6 * 1024 * 1024)
    client.post("/", json=["SET", key("a"), value])
    client.post("/", json=["SET", key("b"), value])
    response = client.post("/", json=["MGET", key("a"), key("b")])
    assert response.status_code == 400
    assert response.json()["error"].startswith("ERR max request size exceeded")


# -- refused commands -------------------------------------------------------------


@pytest.mark.parametrize(
    "command, name",
    [
        (["BLPOP", "q", 0], "BLPOP"),
        (["brpop", "q", 0], "BRPOP"),
        (["BRPOPLPUSH", "q", "r", 0], "BRPOPLPUSH"),
        (["BLMOVE", "q", "r", "LEFT", "RIGHT", 0], "BLMOVE"),
        (["BLMPOP", 0, 1, "q", "LEFT"], "BLMPOP"),
        (["BZPOPMIN", "z", 0], "BZPOPMIN"),
        (["BZPOPMAX", "z", 0], "BZPOPMAX"),
        (["XREAD", "BLOCK", 0, "STREAMS", "s", "$"], "XREAD BLOCK"),
        (["XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">"], "XREADGROUP BLOCK"),
        (["WAIT", 1, 0], "WAIT"),
        (["SUBSCRIBE", "chan"], "SUBSCRIBE"),
        (["PSUBSCRIBE", "c*"], "PSUBSCRIBE"),
        (["MONITOR"], "MONITOR"),
        (["SELECT", 0], "SELECT"),
        (["MULTI"], "MULTI"),
        (["WATCH", "k"], "WATCH"),
        (["CLIENT", "KILL", "TYPE", "normal"], "CLIENT"),
        (["SWAPDB", 1, 2], "SWAPDB"),
        (["MOVE", "k", 2], "MOVE"),
        (["COPY", "a", "b", "DB", 2], "COPY"),
        (["SHUTDOWN"], "SHUTDOWN"),
    ],
)
def test_refused_commands_answer_at_once(http_client, creds, command, name):
    http = http_client(creds.token_a, timeout=5.0)  # a blocking command would time out
    response = http.post("/", json=command)
    assert response.status_code == 400
    assert response.json() == {"error": not_available(name)}


def test_blocking_command_in_path_form_is_refused(client):
    response = client.get("/blpop/q/0")
    assert (response.status_code, response.json()) == (400, {"error": not_available("BLPOP")})


def test_non_blocking_xread_is_served(client, key):
    client.post("/", json=["XADD", key("s"), "1-1", "f", "v"])
    response = client.post("/", json=["XREAD", "COUNT", 1, "STREAMS", key("s"), "0"])
    assert response.json() == {"result": [[key("s"), [["1-1", ["f", "v"]]]]]}


# -- path form --------------------------------------------------------------------


def test_path_form_get(client, key):
    assert client.get(f"/set/{key()}/bar").json() == {"result": "OK"}
    assert client.get(f"/get/{key()}").json() == {"result": "bar"}
    assert client.get(f"/SET/{key('x')}/1/EX/100").json() == {"result": "OK"}
    assert 0 < client.get(f"/ttl/{key('x')}").json()["result"] <= 100


def test_path_form_post_body_is_last_argument_and_query_follows(client, key):
    body = b'{"json": "value", "bytes": "\xc3\xa9"}'
    assert client.post(f"/set/{key()}", content=body, params={"EX": "100"}).json() == {
        "result": "OK"
    }
    assert client.get(f"/get/{key()}").json() == {"result": body.decode()}
    assert 0 < client.get(f"/ttl/{key()}").json()["result"] <= 100


def test_path_form_percent_decoding(client, key):
    name = key("a/b c")
    encoded = name.replace("/", "%2F").replace(" ", "%20")
    assert client.get(f"/set/{encoded}/caf%C3%A9").json() == {"result": "OK"}
    assert client.post("/", json=["GET", name]).json() == {"result": "café"}


def test_path_form_failed_command_is_400(client):
    response = client.get("/get")
    assert response.status_code == 400
    assert response.json() == {"error": "ERR wrong number of arguments for 'get' command"}


# -- pipeline ---------------------------------------------------------------------


def test_pipeline_errors_are_inline_with_200(client, key):
    response = client.post(
        "/pipeline",
        json=[
            ["SET", key(), "text"],
            ["INCR", key()],
            ["BLPOP", key("q"), 0],
            ["NOPE"],
            ["GET", key()],
            ["SETEX", key("e"), 13, "v"],
        ],
    )
    assert response.status_code == 200
    assert response.json() == [
        {"result": "OK"},
        {"error": "ERR value is not an integer or out of range"},
        {"error": not_available("BLPOP")},
        {"error": not_available("NOPE")},
        {"result": "text"},
        {"result": "OK"},
    ]


def test_pipeline_keeps_order_over_a_thousand_commands(client, key):
    commands = [["RPUSH", key("l"), str(i)] for i in range(1000)]
    results = client.post("/pipeline", json=commands).json()
    assert results == [{"result": i + 1} for i in range(1000)]
    stored = client.post("/", json=["LRANGE", key("l"), 0, -1]).json()["result"]
    assert stored == [str(i) for i in range(1000)]


# -- transactions -----------------------------------------------------------------


def test_multi_exec_runtime_errors_are_inline(client, key):
    response = client.post(
        "/multi-exec",
        json=[
            ["SET", key(), "x"],
            ["INCR", key()],
            ["GET", key()],
            ["ZADD", key("z"), 11, "a", 22, "b"],
        ],
    )
    assert response.status_code == 200
    assert response.json() == [
        {"result": "OK"},
        {"error": "ERR value is not an integer or out of range"},
        {"result": "x"},
        {"result": 2},
    ]


def test_multi_exec_with_a_malformed_command_runs_nothing(client, key):
    response = client.post("/multi-exec", json=[["SET", key(), "1"], ["GET"]])
    assert response.status_code == 400
    assert response.json() == {"error": "ERR wrong number of arguments for 'get' command"}
    assert client.post("/", json=["EXISTS", key()]).json() == {"result": 0}


def test_multi_exec_with_an_unsupported_command_runs_nothing(client, key):
    response = client.post("/multi-exec", json=[["SET", key(), "1"], ["BLPOP", key("q"), 0]])
    assert (response.status_code, response.json()) == (400, {"error": not_available("BLPOP")})
    assert client.post("/", json=["EXISTS", key()]).json() == {"result": 0}


def _exec_calls(redis_db) -> int:
    # straight from redis-server: INFO is server-wide, so tokens may not run it
    return redis_db(0).info("commandstats").get("cmdstat_exec", {}).get("calls", 0)


def test_multi_exec_runs_in_one_multi_exec_block(client, key, redis_db):
    before = _exec_calls(redis_db)
    client.post("/multi-exec", json=[["INCR", key()], ["INCR", key()]])
    client.post("/pipeline", json=[["INCR", key()], ["INCR", key()]])
    assert _exec_calls(redis_db) == before + 1


def test_multi_exec_is_isolated_from_concurrent_readers(devserver, http_client, creds, key):
    """Readers never see one INCR of a transaction without the other."""
    writer, reader = http_client(creds.token_a), http_client(creds.token_a)
    stop = threading.Event()
    seen: list[list] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(reader.post("/", json=["MGET", key("a"), key("b")]).json()["result"])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(200):
            writer.post(
                "/multi-exec",
                json=[["INCR", key("a")], ["SET", key("pad"), "x" * 1000], ["INCR", key("b")]],
            )
    finally:
        stop.set()
        thread.join()
    assert seen
    assert all(a == b for a, b in seen)


# -- response format --------------------------------------------------------------


def test_resp2_response_format_is_refused_with_400(client):
    response = client.post("/", json=["PING"], headers={"Upstash-Response-Format": "resp2"})
    assert response.status_code == 400
    assert "error" in response.json()
    assert (
        client.post("/", json=["PING"], headers={"Upstash-Response-Format": "json"}).status_code
        == 200
    )
