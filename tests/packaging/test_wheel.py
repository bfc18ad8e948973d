"""The built wheel works anywhere: installed with pip into a fresh virtualenv in a temporary
folder and run from outside the checkout, it migrates, ticks and relays against the throwaway
cluster, reading its SQL and migrations from inside the installed package. The plain install is
lean (no dev server, benchmark or test packages): the commands that need an extra say which one,
and with the extra installed they work.

Offline and quick: pip resolves the wheel's own dependency list, but from a folder of wheels
repacked once from this test run's environment (--no-index --find-links), not from PyPI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from packaging.utils import canonicalize_name

from relay.devserver import DevServer
from relay.local.embedded import free_port
from tests.support.cli import ROOT
from tests.support.waiting import wait_for

TOKEN = "tok-wheel-3e8a1c"

pytestmark = pytest.mark.slow  # the wheelhouse builds the wheel


def test_every_relay_subpackage_is_shipped():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "relay").rglob("__init__.py")
    }
    assert found <= listed, (
        f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    )


# what only the extras bring: none of it may be in the plain install
EXTRA_ONLY = ("hiredis", "uvloop", "redis", "pytest", "upstash-redis", "watchfiles", "websockets")


@pytest.fixture(scope="module")
def installed(wheelhouse, tmp_path_factory) -> Path:
    """A virtualenv with `pip install pgpulse` (no extra) done in it; returns its bin folder.
    test_with_the_devserver_extra adds the extra to it, so it runs last."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip_install(venv / "bin", wheelhouse, "pgpulse")
    return venv / "bin"


def pip_install(bin_dir: Path, wheelhouse: Path, what: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(bin_dir / "python"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            what,
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"PIP_CONFIG_FILE": os.devnull},
    )  # this folder only
    assert done.returncode == 0, done.stderr


def installed_names(bin_dir: Path) -> set[str]:
    out = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import importlib.metadata as m; "
            "print(*(d.metadata['Name'] for d in m.distributions()))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {canonicalize_name(n) for n in out.split()}


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "UPSTASH_", "PGPULSE_", "DATABASE_URL", "VIRTUAL_ENV"))
    }


def run(
    bin_dir: Path, cwd: Path, env: dict[str, str], *args: str, status: int = 0
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == status, f"{args}: {done.stderr[-2000:]}"
    return done


def test_the_lean_wheel_migrates_ticks_and_relays_from_anywhere(
    installed, pg_server, redis_server, tmp_path
):
    assert not installed_names(installed) & {canonicalize_name(n) for n in EXTRA_ONLY}
    env = clean_env()
    where = run(
        installed,
        tmp_path,
        env,
        "python",
        "-c",
        "import relay, relay.resources as r; print(relay.__file__); print(r.migrations_dir())",
    )
    package_file, migrations = where.stdout.split()
    assert Path(package_file).is_relative_to(installed.parent)  # not the checkout
    assert Path(migrations).is_relative_to(installed.parent)
    # the queue contract's scripts are package data any worker loads (pgpulse worker too)
    scripts = run(
        installed,
        tmp_path,
        env,
        "python",
        "-c",
        "from relay.worker.protocol import script_text as t; print(t('claim')[:2], t('ack')[:2])",
    )
    assert scripts.stdout.split() == ["--", "--"]

    name = f"wheel{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    env["DATABASE_URL"] = pg_server.dsn(name)
    try:
        run(installed, tmp_path, env, "pgpulse", "migrate")
        assert (
            "CREATE TABLE pgpulse.outbox"
            in run(installed, tmp_path, env, "python", "-m", "relay", "migrate", "--sql").stdout
        )
        run(installed, tmp_path, env, "pgpulse", "region", "add", "us-east-1")
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("UPDATE pgpulse.regions SET is_default = true")
            conn.execute(
                "INSERT INTO public.monitors (url, next_check_at) SELECT"
                " 'https://w' || g || '.example', now() - interval '1 second'"
                " FROM generate_series(1, 25) g"
            )
        tick = json.loads(
            run(installed, tmp_path, env, "pgpulse", "tick", "--lookahead", "0", "--json").stdout
        )
        assert tick["jobs_written"] == 25
        with DevServer(redis_server.url, {TOKEN: 5}) as devserver:  # this test run's own
            env |= {"UPSTASH_REDIS_REST_URL": devserver.url, "UPSTASH_REDIS_REST_TOKEN": TOKEN}
            # with the ops endpoints: uvicorn and its httptools protocol are in the lean install
            totals = json.loads(
                run(
                    installed,
                    tmp_path,
                    env,
                    "pgpulse",
                    "relay",
                    "--once",
                    "--json",
                    "--http",
                    f"127.0.0.1:{free_port()}",
                ).stdout
            )
        queued = redis.Redis.from_url(redis_server.url, db=5)
        assert queued.llen("pgpulse:jobs:us-east-1:normal") == 25, totals
        queued.flushdb()
        run(installed, tmp_path, env, "pgpulse", "status")
        run(installed, tmp_path, env, "pgpulse", "doctor", status=1)  # nothing ticks: says so
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_without_its_extra_a_command_says_which_to_install(installed, tmp_path):
    for args, extra in (
        (["devserver", "--token", "t"], "devserver"),
        (["demo", "--seconds", "1"], "devserver"),
        (["bench", "tick"], "bench"),
    ):
        done = run(installed, tmp_path, clean_env(), "pgpulse", *args, status=1)
        assert done.stderr == (
            f"pgpulse {args[0]} needs the {extra} extra: pip install 'pgpulse[{extra}]'\n"
        )
        assert done.stdout == ""


def test_with_the_devserver_extra_the_devserver_serves(
    installed, wheelhouse, redis_server, tmp_path
):
    pip_install(installed, wheelhouse, "pgpulse[devserver]")
    assert {"hiredis", "uvloop"} <= installed_names(installed)
    assert "redis" not in installed_names(installed)  # that one is the bench extra's
    port = free_port()
    server = subprocess.Popen(
        [
            str(installed / "pgpulse"),
            "devserver",
            "--port",
            str(port),
            "--redis-url",
            redis_server.url,
        ],
        cwd=tmp_path,
        env=clean_env() | {"PGPULSE_DEVSERVER_TOKENS": f"{TOKEN}=6"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def pong():
            if server.poll() is not None:
                raise AssertionError(f"the devserver exited: {server.communicate()}")
            try:
                return httpx.post(
                    f"http://127.0.0.1:{port}",
                    json=["PING"],
                    timeout=2,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).json()
            except httpx.TransportError:
                return None

        assert wait_for(pong, 30, "the installed devserver") == {"result": "PONG"}
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
