"""The built wheel works anywhere: installed into a fresh virtualenv in a temporary folder
and run from outside the checkout, it migrates, ticks and relays against the throwaway
cluster, reading its SQL and migrations from inside the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import psycopg
import pytest
import redis

from relay.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "relay", "sql", "migrations")
TOKEN = "tok-wheel-3e8a1c"


def test_every_relay_subpackage_is_shipped():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "relay").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A virtualenv holding only the built wheel (its dependencies come from this test
    run's environment through a .pth line: no network needed); returns its bin folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: the build leaves nothing in the checkout
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                          if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(base / "dist"), str(src)], check=True, capture_output=True)
    wheel, = (base / "dist").glob("pgpulse-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    shutil.rmtree(src)
    return venv / "bin"


def run(bin_dir: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return done


def test_the_installed_wheel_migrates_ticks_and_relays_from_anywhere(
        installed, pg_server, redis_server, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "UPSTASH_", "PGPULSE_", "DATABASE_URL", "VIRTUAL_ENV"))}
    where = run(installed, tmp_path, env, "python", "-c",
                "import relay, relay.resources as r; print(relay.__file__); print(r.migrations_dir())")
    package_file, migrations = where.stdout.split()
    assert Path(package_file).is_relative_to(installed.parent)      # not the checkout
    assert Path(migrations).is_relative_to(installed.parent)

    name = f"wheel{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    env["DATABASE_URL"] = pg_server.dsn(name)
    try:
        run(installed, tmp_path, env, "pgpulse", "migrate")
        assert "CREATE TABLE pgpulse.outbox" in run(installed, tmp_path, env,
                                                     "python", "-m", "relay", "migrate", "--sql").stdout
        run(installed, tmp_path, env, "pgpulse", "region", "add", "us-east-1")
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("UPDATE pgpulse.regions SET is_default = true")
            conn.execute("INSERT INTO public.monitors (url, next_check_at) SELECT"
                         " 'https://w' || g || '.example', now() - interval '1 second'"
                         " FROM generate_series(1, 25) g")
        tick = json.loads(run(installed, tmp_path, env, "pgpulse", "tick", "--lookahead", "0",
                              "--json").stdout)
        assert tick["jobs_written"] == 25
        with DevServer(redis_server.url, {TOKEN: 5}) as devserver:
            env |= {"UPSTASH_REDIS_REST_URL": devserver.url, "UPSTASH_REDIS_REST_TOKEN": TOKEN}
            totals = json.loads(run(installed, tmp_path, env, "pgpulse", "relay", "--once",
                                    "--json").stdout)
        queued = redis.Redis.from_url(redis_server.url, db=5)
        assert queued.llen("pgpulse:jobs:us-east-1:normal") == 25, totals
        queued.flushdb()
        run(installed, tmp_path, env, "pgpulse", "status")
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
