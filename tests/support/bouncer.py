"""A real PgBouncer in transaction mode in front of the test cluster (the `bouncer` fixture
of tests/conftest.py): every client transaction may meet another server session."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from relay.local.embedded import EmbeddedPostgres, _service_user, die_with_parent, free_port
from tests.support.waiting import wait_for

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# the login roles the suites connect as (auth_type = trust still needs each in the list)
USERS = ("postgres", "relay_app", "ticker_app", "monitor_app")


@contextlib.contextmanager
def pgbouncer(pg_server: EmbeddedPostgres, pool_size: int = 4) -> Iterator[int]:
    """Runs pgbouncer in transaction mode in front of `pg_server`; yields its port."""
    if not Path(PGBOUNCER).exists():
        pytest.fail("pgbouncer not installed: run scripts/setup.sh (apt-get install pgbouncer)")
    user = _service_user()  # pgbouncer, like PostgreSQL, refuses to run as root
    home = Path(tempfile.mkdtemp(prefix="pgpulse-bouncer-"))  # reachable by that user
    port = free_port()
    (home / "userlist.txt").write_text("".join(f'"{name}" ""\n' for name in USERS))
    (home / "pgbouncer.ini").write_text(f"""
[databases]
* = host=127.0.0.1 port={pg_server.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {home}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
logfile = {home}/pgbouncer.log
""")
    if user:
        for path in (home, *home.iterdir()):
            shutil.chown(path, user.pw_uid, user.pw_gid)
    proc = subprocess.Popen(
        [PGBOUNCER, str(home / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )

    def accepts() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {(home / 'pgbouncer.log').read_text()[-500:]}")
        with contextlib.suppress(psycopg.OperationalError):
            psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2
            ).close()
            return True
        return False

    try:
        wait_for(accepts, timeout=30, what="pgbouncer to accept connections")
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the pooler's."""
    parts = urlsplit(url)
    return parts._replace(
        netloc=parts.netloc.replace(parts.netloc.split("@")[-1], f"127.0.0.1:{port}")
    ).geturl()
