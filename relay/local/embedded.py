"""Throwaway local services: a PostgreSQL cluster with pg_cron and a redis-server.

Used by `make demo`, the benchmarks and the test suites, so that all of them run on
any fresh machine without touching the machine's own services. PostgreSQL refuses to
run as root, so when we are root the cluster runs as the unprivileged `postgres` OS
user (or `nobody`), in a directory we hand over to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from relay.errors import ServiceError

CRON_DATABASE = "pgpulse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(sig: signal.Signals = signal.SIGTERM):
    """A preexec_fn: the child gets `sig` when the thread that started it dies, so a killed
    test run or demo leaves no server running (Linux prctl PR_SET_PDEATHSIG)."""

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)

    return preexec


def _find_pg_bindir() -> Path:
    """The newest installed PostgreSQL whose lib folder holds pg_cron."""
    if override := os.environ.get("PGPULSE_PG_BINDIR"):
        return Path(override)
    for libfile in sorted(glob.glob("/usr/lib/postgresql/*/lib/pg_cron.so"), reverse=True):
        return Path(libfile).parent.parent / "bin"
    raise ServiceError(
        "PostgreSQL with pg_cron not found; run: sudo apt-get install -y postgresql-15-cron"
    )


def _service_user() -> pwd.struct_passwd | None:
    """The OS user to run PostgreSQL as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceError("running as root and no unprivileged user (postgres, nobody) exists")


class ManagedService:
    """A local process started by `start()` and removed by `stop()`; as a context manager,
    a failed start still cleans up after itself."""

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedPostgres(ManagedService):
    """A PostgreSQL cluster in a temporary directory, pg_cron preloaded, trust auth."""

    def __init__(
        self, *, fast: bool = False, port: int | None = None, settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = _find_pg_bindir()
        self.port = port or free_port()
        self.fast = fast  # fsync off: for tests; benchmarks keep durable settings
        self.settings = settings or {}  # postgresql.conf lines over the defaults below
        self.user = _service_user()
        self.base: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    def dsn(self, dbname: str = CRON_DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            cwd=self.base,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"{args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def start(self) -> EmbeddedPostgres:
        self.base = Path(tempfile.mkdtemp(prefix="pgpulse-pg-"))
        if self.user:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "300",
            "shared_buffers": "'256MB'",
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": f"'{CRON_DATABASE}'",
            # pg_cron's libpq mode: the socket folder with trust auth, no password needed
            "cron.host": f"'{self.base}'",
            "log_min_messages": "warning",
            "max_wal_size": "'2GB'",
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.settings
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.start_postmaster()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{CRON_DATABASE}"')
        return self

    def start_postmaster(self) -> None:
        """Starts the server of the initialised cluster (again) and waits until it accepts
        connections. The postmaster runs as our child, not daemonized as pg_ctl would: if we
        die, it gets SIGQUIT (immediate shutdown) instead of running on."""
        assert self.base is not None  # start() made the cluster
        log = open(self.base / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir)],
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGQUIT),
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"postgres exited with {self.proc.returncode}: {self.log_tail(5)}"
                )
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"postgres did not accept connections within 60 s: {self.log_tail(5)}"
                )
            time.sleep(0.05)

    def stop_postmaster(self, mode: str) -> None:
        """Stops the server, keeping the cluster. pg_ctl's stop modes as signals: smart
        SIGTERM, fast SIGINT, immediate SIGQUIT."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(
            {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        )
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, mode: str = "fast") -> None:
        """Stop (mode fast, or immediate for a crash) and start on the same port."""
        self.stop_postmaster(mode)
        self.start_postmaster()

    def stop(self) -> None:
        if self.base is None:
            return
        self.stop_postmaster("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def log_tail(self, lines: int = 40) -> str:
        path = self.base / "server.log" if self.base else None
        if not path or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class EmbeddedRedis(ManagedService):
    """A redis-server on a free loopback port that keeps nothing on disk."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedRedis:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise ServiceError("redis-server not found; run: sudo apt-get install -y redis-server")
        self.workdir = Path(tempfile.mkdtemp(prefix="pgpulse-redis-"))
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--databases",
                "16",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"redis-server exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise ServiceError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
