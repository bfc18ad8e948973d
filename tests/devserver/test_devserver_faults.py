"""Fault injection through the admin API: each fault behaves as configured, can be scoped
to one token (one region down, the others fine) and goes away when cleared."""

from __future__ import annotations

import time

import httpx
import pytest

from relay.devserver import DevServer, DevServerError
from relay.local.embedded import EmbeddedRedis
from tests.support.waiting import wait_for


def test_faults_are_off_by_default(devserver, client):
    assert devserver.clear_faults() == {"default": None, "scoped": []}
    statuses = {client.post("/", json=["PING"]).status_code for _ in range(50)}
    assert statuses == {200}


def test_latency_adds_at_least_the_fixed_delay(devserver, client):
    devserver.set_faults({"latency_ms": 300})
    started = time.perf_counter()
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}
    assert time.perf_counter() - started >= 0.3


def test_jitter_adds_on_top_of_the_fixed_delay(devserver, client):
    devserver.set_faults({"latency_ms": 100, "jitter_ms": 100, "seed": 7})
    before = devserver.stats()["faults"]["latency"]
    for _ in range(5):
        started = time.perf_counter()
        client.post("/pipeline", json=[["PING"]])
        assert time.perf_counter() - started >= 0.1
    assert devserver.stats()["faults"]["latency"] == before + 5


def test_error_rate_one_answers_every_request_with_the_status(devserver, client, key):
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [502]})
    for path, body in (
        ("/", ["SET", key(), "v"]),
        ("/pipeline", [["SET", key(), "v"]]),
        ("/multi-exec", [["SET", key(), "v"]]),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 502
        assert "error" in response.json()
    devserver.clear_faults()
    assert client.post("/", json=["EXISTS", key()]).json() == {"result": 0}  # nothing ran


def test_error_statuses_are_drawn_from_the_list(devserver, client):
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [500, 502, 503], "seed": 1})
    statuses = {client.post("/", json=["PING"]).status_code for _ in range(60)}
    assert statuses == {500, 502, 503}


def test_error_rate_is_a_share_of_requests(devserver, client):
    devserver.set_faults({"error_rate": 0.3, "error_statuses": [503], "seed": 3})
    statuses = [client.post("/", json=["PING"]).status_code for _ in range(400)]
    assert set(statuses) == {200, 503}
    assert 0.2 < statuses.count(503) / len(statuses) < 0.4


def test_hang_never_answers_until_the_client_gives_up(devserver, http_client, creds):
    devserver.set_faults({"hang_rate": 1.0})
    impatient = http_client(creds.token_a, timeout=0.5)
    with pytest.raises(httpx.ReadTimeout):
        impatient.post("/", json=["PING"])
    devserver.clear_faults()
    assert impatient.post("/", json=["PING"]).json() == {"result": "PONG"}
    assert devserver.stats()["faults"]["hang"] >= 1


def test_drop_closes_the_connection_without_a_response(devserver, http_client, creds):
    devserver.set_faults({"drop_rate": 1.0})
    http = http_client(creds.token_a, timeout=5.0)
    started = time.perf_counter()
    with pytest.raises(httpx.TransportError) as caught:
        http.post("/pipeline", json=[["PING"]])
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert time.perf_counter() - started < 4
    devserver.clear_faults()
    assert http.post("/", json=["PING"]).json() == {"result": "PONG"}
    assert devserver.stats()["faults"]["drop"] >= 1


def test_phase_after_runs_the_commands_then_loses_the_answer(devserver, client, key):
    devserver.set_faults({"drop_rate": 1.0, "phase": "after"})
    with pytest.raises(httpx.TransportError):
        client.post("/pipeline", json=[["SET", key(), "ran"]])
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [503], "phase": "after"})
    assert client.post("/", json=["INCR", key("n")]).status_code == 503
    devserver.clear_faults()
    assert client.post("/", json=["MGET", key(), key("n")]).json() == {"result": ["ran", "1"]}


def test_inline_errors_replace_a_share_of_pipeline_commands(devserver, client, key):
    devserver.set_faults({"inline_error_rate": 0.25, "inline_error": "ERR injected", "seed": 11})
    before = devserver.stats()["faults"]["inline_error"]
    commands = [["SET", key(str(i)), "1"] for i in range(2000)]
    results = client.post("/pipeline", json=commands).json()
    failed = [i for i, r in enumerate(results) if r == {"error": "ERR injected"}]
    ok = [i for i, r in enumerate(results) if r == {"result": "OK"}]
    assert len(failed) + len(ok) == len(commands)
    assert 0.2 < len(failed) / len(commands) < 0.3
    assert devserver.stats()["faults"]["inline_error"] == before + len(failed)
    devserver.clear_faults()
    exists = client.post("/pipeline", json=[["EXISTS", key(str(i))] for i in range(2000)]).json()
    assert [i for i, r in enumerate(exists) if r == {"result": 0}] == failed  # never executed


def test_inline_errors_leave_single_commands_and_transactions_alone(devserver, client, key):
    devserver.set_faults({"inline_error_rate": 1.0})
    assert client.post("/", json=["SET", key(), "v"]).json() == {"result": "OK"}
    assert client.post("/multi-exec", json=[["GET", key()]]).json() == [{"result": "v"}]
    assert client.post("/pipeline", json=[["GET", key()]]).json() == [
        {"error": "ERR devserver injected fault"}
    ]


def test_faults_scoped_to_one_token_leave_the_others_alone(devserver, client, client_b, creds):
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [503]}, tokens=[creds.token_a])
    assert {client.post("/", json=["PING"]).status_code for _ in range(20)} == {503}
    assert {client_b.post("/", json=["PING"]).status_code for _ in range(20)} == {200}
    described = devserver.set_faults({"drop_rate": 1.0}, tokens=[creds.token_b])
    assert sorted(rule["db"] for rule in described["scoped"]) == [creds.db_a, creds.db_b]
    assert creds.token_a not in str(described)
    with pytest.raises(httpx.TransportError):
        client_b.post("/", json=["PING"])


def test_a_scoped_rule_overrides_the_default_rule(devserver, client, client_b, creds):
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [500]})
    devserver.set_faults({}, tokens=[creds.token_b])
    assert client.post("/", json=["PING"]).status_code == 500
    assert client_b.post("/", json=["PING"]).status_code == 200


def test_clearing_faults_restores_service(devserver, client, client_b):
    devserver.set_faults({"error_rate": 1.0})
    assert client.post("/", json=["PING"]).status_code >= 500
    assert devserver.clear_faults() == {"default": None, "scoped": []}
    assert client.post("/", json=["PING"]).json() == {"result": "PONG"}
    assert client_b.post("/", json=["PING"]).json() == {"result": "PONG"}


def test_unauthenticated_requests_are_not_faulted(devserver, anonymous):
    devserver.set_faults({"error_rate": 1.0})
    assert anonymous.post("/", json=["PING"]).status_code == 401


# -- admin API --------------------------------------------------------------------


# wrong tokens of the admin token's length (one character off), shorter (a prefix), longer
# (a suffix) and not ASCII: all refused, none an error (the constant-time comparison takes
# bytes of any length)
WRONG_ADMIN = [
    "Bearer admin-secret-for-testS",
    "Bearer admin-secret-for-test",
    "Bearer admin-secret-for-tests2",
    "Bearer ADMIN-SECRET-FOR-TESTS",
    "Bearer admin-secret-for-test\u015b".encode(),
]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Bearer token-region-a", "Basic admin", *WRONG_ADMIN]
)
def test_admin_refuses_a_missing_or_wrong_admin_token(devserver, header):
    headers = {"Authorization": header} if header else {}
    for method, path in (
        ("GET", "/_admin/stats"),
        ("POST", "/_admin/faults"),
        ("DELETE", "/_admin/faults"),
    ):
        response = httpx.request(
            method, devserver.url + path, headers=headers, json={"error_rate": 1.0}
        )
        assert response.status_code == 401
        assert "error" in response.json()
    assert devserver.stats()  # and nothing was installed:
    assert (
        httpx.post(
            devserver.url + "/", json=["PING"], headers={"Authorization": "Bearer token-region-a"}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": 0.6, "drop_rate": 0.6}, "must not exceed 1"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_statuses": [200]}, "error_statuses"),
        ({"phase": "during"}, "phase"),
        ({"bogus": 1}, "unknown fault field"),
        ({"tokens": ["not-a-token"]}, "not a token"),
        ({"tokens": "all"}, "tokens"),
    ],
)
def test_admin_rejects_a_bad_spec(devserver, spec, message):
    with pytest.raises(DevServerError, match=message):
        devserver.set_faults(spec)
    assert devserver.clear_faults()["default"] is None


def test_admin_rejects_non_json(devserver, creds):
    response = httpx.post(
        devserver.url + "/_admin/faults",
        content=b"[[[",
        headers={"Authorization": f"Bearer {creds.admin}"},
    )
    assert response.status_code == 400


def test_stats_count_requests_commands_and_faults(devserver, client, client_b, creds):
    devserver.reset_stats()
    client.post("/pipeline", json=[["PING"], ["PING"], ["PING"]])
    client_b.post("/", json=["PING"])
    client.post("/", json=["BLPOP", "q", 0])
    httpx.post(devserver.url + "/", json=["PING"])  # 401
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [503]})
    client.post("/", json=["PING"])
    stats = devserver.stats()
    assert stats["requests"] == 5
    assert stats["responses"] == {"200": 2, "400": 1, "401": 1, "503": 1}
    assert stats["commands"] == 4
    assert stats["kinds"] == {"pipeline": 1, "command": 2}
    assert stats["faults"]["error"] == 1
    assert stats["dbs"][str(creds.db_a)]["commands"] == 3
    assert stats["dbs"][str(creds.db_b)]["commands"] == 1


def test_admin_api_is_404_without_an_admin_token(devserver_redis, creds):
    with DevServer(devserver_redis.url, {creds.token_a: creds.db_a}, admin_token=None) as plain:
        response = httpx.get(
            plain.url + "/_admin/stats", headers={"Authorization": f"Bearer {creds.admin}"}
        )
        assert response.status_code == 404
        assert "error" in response.json()
        with pytest.raises(DevServerError, match="without an admin token"):
            plain.stats()


def test_a_redis_outage_is_a_503_and_service_resumes(creds):
    """Not an injected fault: redis-server itself goes away and comes back."""
    redis_server = EmbeddedRedis().start()
    port = redis_server.port
    try:
        with (
            DevServer(redis_server.url, {creds.token_a: 0}, admin_token=None) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {creds.token_a}"}
            ) as http,
        ):
            assert http.post("/", json=["SET", "k", "v"]).json() == {"result": "OK"}
            redis_server.stop()
            down = http.post("/pipeline", json=[["GET", "k"]])
            assert down.status_code == 503
            assert down.json()["error"].startswith("ERR devserver:")
            redis_server = EmbeddedRedis(port=port).start()
            wait_for(
                lambda: http.post("/", json=["PING"]).status_code == 200,
                10,
                "the dev server to reach redis-server again",
            )
            assert http.post("/", json=["GET", "k"]).json() == {
                "result": None
            }  # a fresh, empty redis
    finally:
        redis_server.stop()
