"""Helpers for the relay's process tests: regions and their tokens, outbox rows (from the
real tick or inserted directly), relay subprocesses, reading the queues straight from
redis-server, and waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from relay.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "queue-contract.schema.json").read_text())


@dataclass(frozen=True)
class RegionSpec:
    code: str
    db: int
    token: str
    alt_token: str  # a second token of the same database: two relays can see it differently


# Distinctive token values, so a test can prove none of them shows in any output.
REGIONS = (
    RegionSpec("us-east-1", 1, "tok-us-east-1-5b2f9c0d7e", "tok-us-east-1-alt-61f0c2"),
    RegionSpec("eu-west-1", 2, "tok-eu-west-1-a81c4e6f30", "tok-eu-west-1-alt-9d3a47"),
    RegionSpec("ap-south-1", 3, "tok-ap-south-1-3d9e7b1a54", "tok-ap-south-1-alt-0b8e15"),
)
BY_CODE = {r.code: r for r in REGIONS}
ADMIN_TOKEN = "admin-7c1e0f9a2b"


def env_suffix(code: str) -> str:
    return code.upper().replace("-", "_")


# ------------------------------------------------------------------ the dev server


# ------------------------------------------------------------------ the database


def insert_monitors(conn, n: int, *, region: str | None = "spread", allow_fallback: bool = True,
                    due_ago_s: float = 1.0) -> None:
    """n active monitors due `due_ago_s` ago with varied checks; region 'spread' gives a
    third of them no preferred region (round-robin) and spreads the rest over the regions."""
    codes = [r.code for r in REGIONS]
    conn.execute("""
        INSERT INTO public.monitors (url, method, timeout_ms, expected_status, check_retries,
                                     check_retry_delay_ms, check_interval_minutes,
                                     preferred_region, allow_fallback, criticality, next_check_at)
        SELECT 'https://example-' || g || '.test/health?probe=' || g,
               (ARRAY['GET', 'HEAD', 'POST'])[1 + g %% 3],
               1000 + (g %% 50) * 100,
               CASE WHEN g %% 7 = 0 THEN ARRAY[200, 204] ELSE ARRAY[200] END,
               g %% 4, (g %% 5) * 500,
               (ARRAY[1, 5, 15, 60])[1 + g %% 4],
               CASE WHEN %(region)s::text = 'spread'
                    THEN (ARRAY[NULL, %(r0)s, %(r1)s, %(r2)s])[1 + g %% 4]
                    ELSE %(region)s::text END,
               %(allow_fallback)s,
               (ARRAY['critical', 'high', 'normal', 'low'])[1 + g %% 4],
               now() - make_interval(secs => %(ago)s)
          FROM generate_series(1, %(n)s) g
    """, {"n": n, "region": region, "r0": codes[0], "r1": codes[1], "r2": codes[2],
          "allow_fallback": allow_fallback, "ago": due_ago_s})


def tick(conn) -> dict:
    """One real tick, jobs due now only (no lookahead); returns its run record."""
    conn.execute("CALL pgpulse.tick(NULL, 'test', '45 seconds', '0 seconds', 5000)")
    return conn.execute(
        "SELECT * FROM pgpulse.tick_runs ORDER BY id DESC LIMIT 1").fetchone()


def insert_jobs(conn, n: int, region: str, *, deliver_in_s: float = 0.0,
                expires_in_s: float = 300.0, allow_fallback: bool = True,
                criticality: str = "normal", tag: str = "job", notify: bool = False) -> list[str]:
    """n outbox rows inserted directly (exact control over timing and routing), with the
    payload the tick writes; returns their job ids."""
    rows = conn.execute("""
        INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                    deliver_at, expires_at, allow_fallback, payload)
        SELECT md5(%(tag)s || '/' || %(region)s || '/' || g)::uuid,
               md5('monitor/' || %(tag)s || '/' || g)::uuid,
               %(region)s, %(criticality)s,
               now() + make_interval(secs => %(deliver)s),
               now() + make_interval(secs => %(deliver)s),
               now() + make_interval(secs => %(expires)s),
               %(allow_fallback)s,
               jsonb_build_object('url', 'https://' || %(tag)s || '-' || g || '.test/',
                                  'method', 'GET', 'timeout_ms', 5000,
                                  'expected_status', jsonb_build_array(200),
                                  'retry', jsonb_build_object('max_attempts', 2, 'delay_ms', 1000))
          FROM generate_series(1, %(n)s) g
        RETURNING job_id::text
    """, {"n": n, "region": region, "deliver": deliver_in_s, "expires": expires_in_s,
          "allow_fallback": allow_fallback, "criticality": criticality, "tag": tag}).fetchall()
    if notify:
        conn.execute("NOTIFY pgpulse_outbox")
    return [r["job_id"] for r in rows]


def record_emitted(conn) -> None:
    """Keeps every job id ever written to the outbox in test_emitted (the relays may
    publish and delete rows before the test could read them)."""
    conn.execute("""
        CREATE TABLE public.test_emitted (job_id uuid NOT NULL);
        CREATE FUNCTION public.test_record_emitted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.test_emitted SELECT job_id FROM new_rows;
            RETURN NULL;
        END $$;
        CREATE TRIGGER test_record_emitted AFTER INSERT ON pgpulse.outbox
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION public.test_record_emitted();
    """)


def emitted_ids(conn) -> list[str]:
    return [r["job_id"] for r in conn.execute("SELECT job_id::text FROM public.test_emitted")]


def outbox_ids(conn) -> set[str]:
    return {r["job_id"] for r in conn.execute("SELECT job_id::text FROM pgpulse.outbox")}


def outbox_count(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"]


# ------------------------------------------------------------------ the queues


@dataclass
class Published:
    """A job as found in Redis: which database (region) and list it sits in, and its value."""

    db: int
    key: str
    raw: bytes
    job: dict


class Queues:
    """Reads every region's queues straight from redis-server."""

    def __init__(self, url: str) -> None:
        self.clients = {r.db: redis.Redis.from_url(url, db=r.db) for r in REGIONS}

    def all(self) -> list[Published]:
        found = []
        for db, client in self.clients.items():
            for key in client.scan_iter(match="pgpulse:jobs:*", count=1000):
                for raw in client.lrange(key, 0, -1):
                    found.append(Published(db, key.decode(), raw, json.loads(raw)))
        return found

    def total(self) -> int:
        total = 0
        for client in self.clients.values():
            for key in client.scan_iter(match="pgpulse:jobs:*", count=1000):
                total += client.llen(key)
        return total

    def counts_by_job(self) -> collections.Counter:
        return collections.Counter(p.job["job_id"] for p in self.all())

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def assert_exactly_once(queues: Queues, expected: set[str]) -> list[Published]:
    """Every expected job is in exactly one queue slot of one region; nothing else is."""
    found = queues.all()
    counts = collections.Counter(p.job["job_id"] for p in found)
    twice = {job_id: n for job_id, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} jobs published more than once, e.g. {list(twice.items())[:3]}"
    missing = expected - counts.keys()
    assert not missing, f"{len(missing)} jobs never published, e.g. {sorted(missing)[:3]}"
    extra = counts.keys() - expected
    assert not extra, f"{len(extra)} unexpected jobs in the queues, e.g. {sorted(extra)[:3]}"
    for p in found:  # the list a job sits in matches its fields
        region = p.job.get("delivered_to", p.job["region"])
        assert p.key == f"pgpulse:jobs:{region}:{p.job['criticality']}", p.job
        assert BY_CODE[region].db == p.db, p.job
    return found


# ------------------------------------------------------------------ relay processes


class RelayProcess:
    """`python -m relay relay ...` in its own session (so it can be killed alone), with
    stdout and stderr in files."""

    def __init__(self, env: dict[str, str], args: list[str], workdir: Path, name: str) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "relay", *args], env=env, cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            os.killpg(self.proc.pid, sig)  # its own session: the group is just this relay

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"relay {self.name} still running after {timeout:g} s\n"
                                 f"{self.tail()}") from None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self) -> list[dict]:
        """The structured log lines written so far (a line being written is skipped)."""
        events = []
        for line in self.stderr().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def has_event(self, name: str, **fields: Any) -> bool:
        return any(e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
                   for e in self.events())

    def tail(self, lines: int = 15) -> str:
        text = self.stderr().splitlines()[-lines:]
        return f"--- {self.name} (exit {self.proc.poll()}) stderr tail:\n" + "\n".join(text)


class Relays:
    """Starts relay processes for one test and kills whatever is left at its end."""

    def __init__(self, db_url: str, devserver: DevServer, workdir: Path) -> None:
        self.db_url = db_url
        self.devserver = devserver
        self.workdir = workdir
        self.started: list[RelayProcess] = []

    def env(self, tokens: dict[str, str] | None = None, **settings: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("UPSTASH_", "PGPULSE_", "DATABASE_URL"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env["DATABASE_URL"] = self.db_url
        env["UPSTASH_REDIS_REST_URL"] = self.devserver.url
        for region in REGIONS:
            token = (tokens or {}).get(region.code, region.token)
            env[f"UPSTASH_REDIS_REST_TOKEN_{env_suffix(region.code)}"] = token
        defaults = {"PGPULSE_POLL_INTERVAL_S": 1, "PGPULSE_LOG_LEVEL": "INFO"}
        for name, value in (defaults | {f"PGPULSE_{k.upper()}": v for k, v in settings.items()}).items():
            env[name] = str(value)
        return env

    def start(self, *args: str, env: dict[str, str] | None = None, **settings: Any) -> RelayProcess:
        process = RelayProcess(env or self.env(**settings), list(args), self.workdir,
                               f"relay{len(self.started)}")
        self.started.append(process)
        return process

    def run_once(self, timeout: float = 60, **settings: Any) -> dict:
        """`pgpulse relay --once --json`; returns its totals."""
        process = self.start("--once", "--json", **settings)
        code = process.wait(timeout)
        assert code == 0, process.tail()
        return json.loads(process.stdout())

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.started[-4:])

    def cleanup(self) -> None:
        for process in self.started:
            if process.running():
                process.kill()


def region_row(conn, code: str) -> dict:
    return conn.execute("SELECT * FROM pgpulse.regions WHERE code = %s", (code,)).fetchone()


def connect(db_url: str) -> psycopg.Connection:
    from psycopg.rows import dict_row
    return psycopg.connect(db_url, autocommit=True, row_factory=dict_row)
