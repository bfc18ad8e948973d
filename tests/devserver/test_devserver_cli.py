"""`python -m relay.devserver` and `pgpulse devserver`: one set of options, the same one-line
errors and exit codes, and a clean exit on SIGINT/SIGTERM, also while a request hangs."""

from __future__ import annotations

import inspect
import signal
import socket
import subprocess
import threading

import httpx
import pytest

import relay.devserver as devserver_package
from relay import cli
from relay.devserver import DevServer, parse_token_args, serve, server
from relay.devserver.options import TOKENS_ENV
from relay.errors import ConfigError
from relay.local.embedded import free_port
from tests.support.cli import run_module
from tests.support.waiting import wait_for

PROG = "python -m relay.devserver"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("relay.devserver", *args, timeout=30)


# -- --token parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        (["tok"], {"tok": 0}),
        (["tok=3"], {"tok": 3}),
        (["a=1", "b=2", "c"], {"a": 1, "b": 2, "c": 0}),
        (["AYNgAS25DQ="], {"AYNgAS25DQ=": 0}),
        (["AYNgAS25DQ==2"], {"AYNgAS25DQ=": 2}),
        (["AYNgAS25Dw===5"], {"AYNgAS25Dw==": 5}),
        (["x=y=0"], {"x=y": 0}),
    ],
)
def test_parse_token_args(values, expected):
    assert parse_token_args(values) == expected


@pytest.mark.parametrize(
    "values, message",
    [
        ([], "at least one --token"),
        (["secret-token=abc"], "must be a non-negative integer"),
        (["secret-token=-1"], "non-negative integer"),
        (["secret-token=+1"], "non-negative integer"),
        (["=2"], "the token is empty"),
        (["secret token=1"], "whitespace"),
        (["secret-token=1", "secret-token=2"], "given twice"),
    ],
)
def test_parse_token_args_rejects_bad_values_without_echoing_them(values, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_token_args(values)
    assert "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tokens": {}}, "at least one --token"),
        ({"admin_token": "tok"}, "--admin-token must"),
        ({"redis_url": "http://127.0.0.1:6379"}, "--redis-url must start with"),
        ({"port": 0}, "--port"),
    ],
)
def test_serve_rejects_bad_configuration(kwargs, message):
    options = {
        "host": "127.0.0.1",
        "port": free_port(),
        "redis_url": "redis://127.0.0.1:1",
        "tokens": {"tok": 0},
        "admin_token": None,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        serve(**options)


# -- the command line -------------------------------------------------------------


def test_cli_reports_an_unreachable_redis_in_one_line():
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        redis_port = closed.getsockname()[1]
        result = run_cli(
            "--port",
            str(free_port()),
            "--redis-url",
            f"redis://:hunter2@127.0.0.1:{redis_port}",
            "--token",
            "secret-token=1",
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: error: cannot connect to redis-server at 127.0.0.1:")
    assert "hunter2" not in result.stderr and "secret-token" not in result.stderr


def test_cli_reports_a_database_redis_does_not_have(devserver_redis):
    result = run_cli(
        "--port", str(free_port()), "--redis-url", devserver_redis.url, "--token", "tok=99"
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"{PROG}: error: redis-server refused SELECT for database 99")
    )


def test_cli_reports_a_busy_port(devserver, devserver_redis):
    result = run_cli(
        "--port", str(devserver.port), "--redis-url", devserver_redis.url, "--token", "tok"
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"{PROG}: error: cannot listen on 127.0.0.1:{devserver.port}")
    )


def test_cli_needs_a_token(devserver_redis):
    result = run_cli("--port", str(free_port()), "--redis-url", devserver_redis.url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"{PROG}: error: at least one --token TOKEN[=DB] is required"


def test_cli_help_names_the_options():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--redis-url", "--token", "--admin-token"):
        assert option in result.stdout


def test_the_package_loads_each_name_it_exports_on_first_use():
    assert set(devserver_package.__all__) == set(devserver_package._HOMES)
    for name in devserver_package.__all__:
        assert getattr(devserver_package, name) is not None


# -- both command lines: `pgpulse devserver` and `python -m relay.devserver` --------

# prog: (its main in this process, its `python -m` arguments)
BOTH = {
    "pgpulse devserver": (lambda argv: cli.main(["devserver", *argv]), ["relay", "devserver"]),
    PROG: (lambda argv: server.main(argv), ["relay.devserver"]),
}


def test_both_command_lines_serve_with_the_same_defaults_and_environment(monkeypatch):
    served = []

    def fake_serve(*args, **kwargs):
        served.append(inspect.signature(serve).bind(*args, **kwargs).arguments)

    for module in (devserver_package, server):
        monkeypatch.setattr(module, "serve", fake_serve)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390")
    monkeypatch.setenv(TOKENS_ENV, "tok=1")
    for main, _ in BOTH.values():
        assert main([]) == 0
    pgpulse, module = served
    assert pgpulse == module
    assert module["redis_url"] == "redis://127.0.0.1:6390" and module["tokens"] == {"tok": 1}


@pytest.mark.parametrize("prog", BOTH)
def test_both_command_lines_end_a_failed_start_alike(prog):
    result = run_module(
        *BOTH[prog][1], "--port", str(free_port()), "--redis-url", "redis://127.0.0.1:1", timeout=30
    )
    assert (result.returncode, result.stderr.strip()) == (
        1,
        f"{prog}: error: at least one --token TOKEN[=DB] is required",
    )


@pytest.mark.parametrize("prog", BOTH)
def test_help_does_not_show_the_redis_password(prog, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:6390")
    with pytest.raises(SystemExit):
        BOTH[prog][0](["--help"])
    shown = capsys.readouterr().out
    assert "--redis-url" in shown and "hunter2" not in shown


# -- shutdown ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly(devserver_redis, signum):
    server = DevServer(devserver_redis.url, {"tok": 0}).start()
    try:
        assert (
            httpx.post(
                server.url + "/", json=["PING"], headers={"Authorization": "Bearer tok"}
            ).status_code
            == 200
        )
        assert server.proc is not None
        server.proc.send_signal(signum)
        assert server.proc.wait(timeout=15) == 0
        assert "Traceback" not in server._log_tail(lines=50)
    finally:
        server.stop()


def test_sigterm_does_not_wait_for_a_hung_request(devserver_redis):
    server = DevServer(devserver_redis.url, {"tok": 0}).start()
    errors: list[BaseException] = []

    def hung_request() -> None:
        try:
            httpx.post(
                server.url + "/", json=["PING"], headers={"Authorization": "Bearer tok"}, timeout=60
            )
        except BaseException as exc:  # the dropped connection
            errors.append(exc)

    try:
        server.set_faults({"hang_rate": 1.0})
        thread = threading.Thread(target=hung_request)
        thread.start()
        wait_for(lambda: server.stats()["faults"]["hang"] == 1, 10, "the request to be held")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=4) == 0  # uvicorn alone would wait 5 s for it
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert errors and isinstance(errors[0], httpx.TransportError)
    finally:
        server.stop()
