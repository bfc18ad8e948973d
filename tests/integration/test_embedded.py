"""Throwaway services never outlive the process that started them, even a killed one."""

import os
import shutil
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from relay.local.embedded import EmbeddedPostgres

STARTER = """
import sys, time
from relay.local.embedded import EmbeddedPostgres, EmbeddedRedis
from relay.devserver import DevServer
pg = EmbeddedPostgres(fast=True).start()
redis = EmbeddedRedis().start()
dev = DevServer(redis.url, {"t": 0}).start()
print(pg.proc.pid, redis.proc.pid, dev.proc.pid, flush=True)
print(pg.base, redis.workdir, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purposes
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow  # seconds of real time: outside make check's lane
def test_killed_starter_leaves_no_server_running():
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    with starter.stdout:
        pids = [int(p) for p in starter.stdout.readline().split()]
        leftovers = starter.stdout.readline().split()
    assert len(pids) == 3 and all(alive(p) for p in pids)
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)
    for folder in leftovers:  # a killed process cannot tidy its folders; we do
        shutil.rmtree(folder)


@pytest.mark.slow  # seconds of real time: outside make check's lane
def test_crash_restart_keeps_port_and_committed_data():
    with EmbeddedPostgres() as pg:  # durable settings: a crash loses nothing committed
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        port = pg.port
        pg.restart("immediate")
        assert pg.port == port
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    assert pg.base is None
