"""Bad input of every kind gets Upstash's error shape and a 4xx status, never a 500,
and the server keeps serving."""

from __future__ import annotations

import pytest

CASES = [
    # (method, path, body, status, text the error starts with)
    ("POST", "/", b"not json", 400, "ERR failed to parse command"),
    ("POST", "/", b"", 400, "ERR failed to parse command"),
    ("GET", "/", b"", 400, "ERR failed to parse command"),
    ("POST", "/", b'{"command": ["PING"]}', 400, "ERR failed to parse command"),
    ("POST", "/", b'"PING"', 400, "ERR failed to parse command"),
    ("POST", "/", b"42", 400, "ERR failed to parse command"),
    ("POST", "/", b"null", 400, "ERR failed to parse command"),
    ("POST", "/", b"[]", 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", {"nested": 1}]', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", ["v"]]', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", null]', 400, "ERR failed to parse command"),
    ("POST", "/", b'[["SET", "k", "v"]]', 400, "ERR failed to parse command"),
    ("POST", "/", b"[null]", 400, "ERR failed to parse command"),
    ("POST", "/", b"[true]", 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", NaN]', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", Infinity]', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", "v"] trailing', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", "\xff\xfe"]', 400, "ERR failed to parse command"),
    ("POST", "/", b'["SET", "k", "\\ud800"]', 400, "ERR failed to parse command"),
    ("POST", "/", b'[123, "a"]', 400, "ERR Command is not available: '123'"),
    ("POST", "/", b'["", "a"]', 400, "ERR Command is not available: ''"),
    ("POST", "/", b'["NOSUCH"]', 400, "ERR Command is not available: 'NOSUCH'"),
    ("POST", "/pipeline", b"not json", 400, "ERR failed to parse pipeline request"),
    ("POST", "/pipeline", b"[]", 400, "ERR failed to parse pipeline request"),
    ("POST", "/pipeline", b'{"a": 1}', 400, "ERR failed to parse pipeline request"),
    ("POST", "/pipeline", b'["SET", "k", "v"]', 400, "ERR failed to parse pipeline request"),
    (
        "POST",
        "/pipeline",
        b'[["PING"], []]',
        400,
        "ERR failed to parse pipeline request: command 1",
    ),
    (
        "POST",
        "/pipeline",
        b'[["PING"], ["SET", "k", {"a": 1}]]',
        400,
        "ERR failed to parse pipeline request: command 1",
    ),
    (
        "POST",
        "/pipeline",
        b'[["PING"], null]',
        400,
        "ERR failed to parse pipeline request: command 1",
    ),
    ("POST", "/multi-exec", b"nope", 400, "ERR failed to parse multi-exec request"),
    ("POST", "/multi-exec", b"[]", 400, "ERR failed to parse multi-exec request"),
    ("POST", "/multi-exec", b'[["PING"], [1.5, 2]]', 400, "ERR Command is not available: '1.5'"),
    ("GET", "/nosuchcommand/a", b"", 400, "ERR Command is not available: 'NOSUCHCOMMAND'"),
    ("GET", "/pipeline", b"", 405, "ERR method not allowed"),
    ("DELETE", "/", b"", 405, "ERR method not allowed"),
    ("PATCH", "/pipeline", b"[]", 405, "ERR method not allowed"),
    ("TRACE", "/get/k", b"", 405, "ERR method not allowed"),
]


@pytest.mark.parametrize("method, path, body, status, error", CASES)
def test_bad_input_gets_an_upstash_error(client, method, path, body, status, error):
    response = client.request(method, path, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert list(payload) == ["error"]
    assert payload["error"].startswith(error), payload["error"]
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}


def test_a_malformed_pipeline_runs_nothing(client, key):
    response = client.post("/pipeline", json=[["SET", key(), "1"], ["SET", key("x"), {"bad": 1}]])
    assert response.status_code == 400
    assert client.post("/", json=["EXISTS", key()]).json() == {"result": 0}


def test_unicode_round_trips(client, key):
    text = 'héllo ✓ 世界 🚀 "quoted" \\ back\nslash'
    assert client.post("/", json=["SET", key(), text]).json() == {"result": "OK"}
    assert client.post("/", json=["GET", key()]).json() == {"result": text}
    assert client.post("/pipeline", json=[["STRLEN", key()]]).json() == [
        {"result": len(text.encode())}
    ]


def test_long_arguments_are_encoded_correctly(client, key):
    values = ["a" * 20_000, "é" * 20_000, "b" * 16383, "c" * 16384, ""]
    commands = [["SET", key(str(i)), v] for i, v in enumerate(values)]
    assert client.post("/pipeline", json=commands).json() == [{"result": "OK"}] * len(values)
    got = client.post("/", json=["MGET", *(key(str(i)) for i in range(len(values)))]).json()
    assert got == {"result": values}


def test_server_survives_a_burst_of_garbage(client):
    for body in (b"\x00" * 1000, b"[" * 10_000, b'["' + b"\\" * 999 + b'"]', b"{" * 5000):
        response = client.post("/", content=body)
        assert response.status_code == 400
        assert "error" in response.json()
    for body in (b"[" * 10_000, b'[["PING"]' * 1000):
        assert client.post("/pipeline", content=body).status_code == 400
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}
