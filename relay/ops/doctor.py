"""`pgpulse doctor`: everything a new install gets wrong, checked one line at a time.

Verdicts: ok, warn (works, but look at it), FAIL (pgpulse will not work like this), skip (an
earlier failure makes the check meaningless). Secrets are never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.rows import dict_row

from relay.config import (
    OpsSettings,
    RelaySettings,
    database_url,
    env_suffix,
    redact_url,
    region_endpoint,
)
from relay.db import DictConnection, describe, one, pinned
from relay.delivery.clocks import Skew, postgres_skew, redis_skew
from relay.delivery.queue import PUSH_SCRIPT
from relay.errors import ConfigError, PgPulseError
from relay.ops.facts import admin_look, ticks_seen
from relay.queries import queries

# past PGPULSE_CLOCK_SKEW_WARN_S a clock is warned about; past this (or the warning
# threshold, if higher) it fails: a Redis clock 5 s ahead drops half of a 10-second
# monitor's jobs as expired, a host 5 s off publishes and measures lag 5 s off
SKEW_FAIL_S = 5.0
# What the relay does, as sql/roles.sql grants it to pgpulse_relay (tests/ops/test_doctor.py
# compares the two): table -> privilege -> None for the whole table, or the columns it needs.
RELAY_NEEDS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "pgpulse.schedule": {
        "SELECT": ("monitor_id", "preferred_region", "allow_fallback", "check_regions")
    },
    "pgpulse.regions": {
        "SELECT": None,
        "UPDATE": (
            "healthy",
            "healthy_changed_at",
            "degraded",
            "workers_absent",
            "workers_absent_since",
        ),
    },
    "pgpulse.outbox": {"SELECT": None, "INSERT": None, "DELETE": None, "UPDATE": ("attempts",)},
    "pgpulse.dead_letters": {
        "SELECT": None,
        "INSERT": None,
        "UPDATE": ("attempts", "last_error", "failed_at", "allow_fallback"),
    },
    "pgpulse.tick_runs": {"SELECT": None},
    "pgpulse.push_intents": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
    "pgpulse.region_observations": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
    "pgpulse.maintenance_windows": {"SELECT": None},
    "pgpulse.leases": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
    "pgpulse.results_latest": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
    "pgpulse.results_history": {"SELECT": None, "INSERT": None, "UPDATE": None},
    # the schema's revision: a relay of another release refuses it (relay.migrate.check_schema)
    "pgpulse.alembic_version": {"SELECT": None},
}
RELAY_FUNCTIONS = ("pgpulse._routing()", "pgpulse.results_maintain()")
# What the read-only ops commands read (doctor, status, `pgpulse http`: the status page,
# /readyz, /metrics, the alerts), as sql/roles.sql grants it to pgpulse_monitor; the
# outbox's and dead letters' rows without their check (payload). Of the schedule, what
# every role may read (sql/80_privileges.sql).
_ROW_COLUMNS = (
    "job_id",
    "monitor_id",
    "region",
    "criticality",
    "scheduled_for",
    "deliver_at",
    "expires_at",
    "allow_fallback",
    "attempts",
    "last_error",
)
MONITOR_NEEDS: dict[str, dict[str, tuple[str, ...] | None]] = {
    "pgpulse.regions": {"SELECT": None},
    "pgpulse.tick_runs": {"SELECT": None},
    "pgpulse.maintenance_windows": {"SELECT": None},
    "pgpulse.outbox": {"SELECT": (*_ROW_COLUMNS, "created_at")},
    "pgpulse.dead_letters": {"SELECT": (*_ROW_COLUMNS, "failed_at")},
    "pgpulse.leases": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
}


@dataclass
class Check:
    name: str
    verdict: str  # ok, warn, FAIL, skip
    detail: str


class Doctor:
    def __init__(self, env: dict[str, str] | None = None, dsn: str | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.dsn = dsn
        self.checks: list[Check] = []
        self.database_clock: Skew | None = None  # PostgreSQL's clock against this host's

    def add(self, name: str, verdict: str, detail: str) -> None:
        self.checks.append(Check(name, verdict, detail))

    @property
    def failed(self) -> bool:
        return any(c.verdict == "FAIL" for c in self.checks)

    def run(self) -> list[Check]:
        self.check_settings()
        try:
            self.dsn = self.dsn or database_url(self.env)
        except ConfigError as exc:
            self.add("database reachable", "FAIL", str(exc))
            return self.checks
        try:
            conn = self.connect(self.dsn)
        except psycopg.Error as exc:
            self.add("database reachable", "FAIL", f"{redact_url(self.dsn)}: {describe(exc)}")
            for name in (
                "pooler",
                "migrated",
                "role rights",
                "pg_cron",
                "recent tick",
                "scheduling",
                "clock skew",
                "regions",
            ):
                self.add(name, "skip", "the database cannot be reached")
            return self.checks
        with conn:  # autocommit: each check in its own pinned transaction (relay.db)
            with pinned(conn):
                row = one(
                    conn.execute(
                        "SELECT current_user AS who, current_database() AS db, "
                        "current_setting('server_version') AS version"
                    ).fetchone()
                )
            self.add(
                "database reachable",
                "ok",
                f"PostgreSQL {row['version']}, database {row['db']} as {row['who']}",
            )
            self.check_pooler(conn)
            with pinned(conn):
                migrated = self.check_migrated(conn)
            if migrated:
                self.guarded("role rights", self.check_rights, conn)
                self.guarded("pg_cron", self.check_cron, conn)
                self.guarded("recent tick", self.check_recent_tick, conn)
                self.guarded("scheduling", self.check_scheduling, conn)
            else:
                for name in ("role rights", "pg_cron", "recent tick", "scheduling"):
                    self.add(name, "skip", "the schema is not migrated")
            self.guarded("clock skew", self.check_clock, conn)
            regions = None
            if migrated:
                try:
                    with pinned(conn):
                        regions = conn.execute(queries()["regions"]).fetchall()
                except psycopg.Error as exc:
                    self.add("regions", "FAIL", f"cannot read pgpulse.regions: {describe(exc)}")
                    return self.checks
        if regions is None:
            self.add("regions", "skip", "the schema is not migrated")
        else:
            self.check_regions([r for r in regions if r["enabled"]])
        return self.checks

    @staticmethod
    def connect(dsn: str) -> DictConnection:
        """No prepared statement: behind a transaction-mode pooler the next transaction may
        meet a server session that has one of that name already."""
        return psycopg.connect(
            dsn,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=5,
            application_name="pgpulse-doctor",
            prepare_threshold=None,
        )

    def guarded(self, name: str, check, conn) -> None:
        """A database error inside one check is that check's FAIL, not the end of the run."""
        try:
            with pinned(conn):
                check(conn)
        except psycopg.Error as exc:
            self.add(name, "FAIL", describe(exc))

    # ------------------------------------------------------------------ checks

    def check_settings(self) -> None:
        """The settings in effect, as the relay would read them; secrets masked."""
        try:
            relay, ops = RelaySettings.from_env(self.env), OpsSettings.from_env(self.env)
        except ConfigError as exc:
            self.add("settings", "FAIL", str(exc))
            return
        shown = []
        for settings in (relay, ops):
            for f in fields(settings):
                value = getattr(settings, f.name)
                if f.metadata.get("secret") or f.name in ("cron_secret", "alert_webhook_url"):
                    value = "set (hidden)" if value else "unset"
                shown.append(f"{f.name}={value}")
        url = self.dsn or self.env.get("DATABASE_URL")
        shown.insert(0, f"DATABASE_URL={redact_url(url) if url else 'unset'}")
        shown.append("PGPULSE_LISTEN=" + self.env.get("PGPULSE_LISTEN", "on"))
        self.add("settings", "ok", ", ".join(shown))

    def check_pooler(self, conn) -> None:
        """Whether a connection pooler stands between this host and PostgreSQL, and whether
        the settings fit it. A pooler gives its client a backend pid of its own making (a
        cancel request goes through it), so the pid the connection was handed at login is
        not the server's pg_backend_pid(); a direct connection, or a proxy that only
        forwards bytes, hands over the server's own. Transaction mode shows when this
        client's transactions meet different server sessions, or another client connected
        at the same time gets the one this client just used: a session-mode pooler keeps a
        server session for its client until it disconnects. Nothing is set, prepared or
        locked on any server session (the probe leaves nothing behind for other clients)."""
        try:
            listen = RelaySettings.from_env(self.env).listen
        except ConfigError:  # reported under "settings"
            listen = RelaySettings().listen
        try:
            server_pid = self.server_pid(conn)
            if conn.info.backend_pid == server_pid:
                self.add("pooler", "ok", "a direct connection: no pooler in between")
                return
            shared = False
            with contextlib.suppress(psycopg.Error), self.connect(self.dsn or "") as other:
                for _ in range(3):  # each side's transaction ends before the other's starts
                    mine, theirs = self.server_pid(conn), self.server_pid(other)
                    if mine == theirs or mine != server_pid:
                        shared = True
                        break
        except psycopg.Error as exc:
            self.add("pooler", "FAIL", describe(exc))
            return
        pooler = "behind a connection pooler (the server's backend pid is not the one it gave)"
        if shared:
            mode = (
                f"{pooler}, in transaction mode (server sessions change hands between transactions)"
            )
            if listen:
                self.add(
                    "pooler",
                    "FAIL",
                    f"{mode}: LISTEN never fires there and prepared statements collide: "
                    "set PGPULSE_LISTEN=off",
                )
            else:
                self.add(
                    "pooler",
                    "ok",
                    f"{mode}: PGPULSE_LISTEN=off fits (run `pgpulse migrate` over a direct "
                    "or session-mode connection)",
                )
        elif listen:
            self.add(
                "pooler",
                "warn",
                f"{pooler}, in session mode or a busy pool in transaction mode: "
                "PGPULSE_LISTEN=on fits session mode only; in transaction mode set "
                "PGPULSE_LISTEN=off",
            )
        else:
            self.add(
                "pooler",
                "ok",
                f"{pooler}: PGPULSE_LISTEN=off fits session and transaction mode",
            )

    @staticmethod
    def server_pid(conn) -> int:
        with pinned(conn):
            return conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]

    def check_migrated(self, conn) -> bool:
        from alembic.script import ScriptDirectory

        from relay.migrate import alembic_config

        head = ScriptDirectory.from_config(alembic_config(self.dsn)).get_current_head()
        try:
            with conn.transaction():
                current = conn.execute("SELECT version_num FROM pgpulse.alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            self.add(
                "migrated", "FAIL", f"no pgpulse schema: run `pgpulse migrate` (head is {head})"
            )
            return False
        except psycopg.errors.InsufficientPrivilege:
            # the relay's own role (sql/roles.sql) may not read Alembic's table: go on
            # with the checks it can make, and say what it could not
            self.add(
                "migrated",
                "warn",
                "this role may not read pgpulse.alembic_version: run "
                f"`pgpulse doctor` as the migrating role to compare "
                f"the revision with head ({head})",
            )
            return True
        except psycopg.Error as exc:
            self.add("migrated", "FAIL", f"cannot read pgpulse.alembic_version: {describe(exc)}")
            return False
        version = current["version_num"] if current else None
        if version != head:
            self.add(
                "migrated",
                "FAIL",
                f"at revision {version}, code expects {head}: run `pgpulse migrate`",
            )
            return False
        self.add("migrated", "ok", f"at revision {head} (head)")
        return True

    def check_rights(self, conn) -> None:
        """Column grants count: the relay's role may update only some columns of a table.
        A role in pgpulse_monitor (read-only, for the ops commands) is judged by what those
        read instead."""
        row = conn.execute(
            "SELECT rolsuper, (SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles"
            " WHERE rolname = 'pgpulse_monitor') AS monitor,"
            " (SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles"
            " WHERE rolname = 'pgpulse_relay') AS relay"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        missing = self.missing_rights(conn, RELAY_NEEDS, RELAY_FUNCTIONS)
        if missing and row["monitor"] and not row["relay"]:
            lacking = self.missing_rights(conn, MONITOR_NEEDS)
            if lacking:
                self.add(
                    "role rights",
                    "FAIL",
                    "the ops commands need " + ", ".join(lacking) + ": run `pgpulse "
                    "migrate` (it grants pgpulse_monitor its rights)",
                )
            else:
                self.add(
                    "role rights",
                    "ok",
                    "read-only (pgpulse_monitor): everything doctor, status, the status "
                    "page, /readyz, /metrics and the alerts read; the relay itself runs as "
                    "a role IN ROLE pgpulse_relay",
                )
        elif missing:
            self.add(
                "role rights",
                "FAIL",
                "the relay needs " + ", ".join(missing) + ": GRANT pgpulse_relay TO this role",
            )
        elif row and row["rolsuper"]:
            self.add(
                "role rights",
                "warn",
                "connected as a superuser: run the relay as a role "
                "IN ROLE pgpulse_relay (sql/roles.sql)",
            )
        else:
            self.add("role rights", "ok", "everything the relay reads and writes")

    @staticmethod
    def missing_rights(
        conn,
        needs: dict[str, dict[str, tuple[str, ...] | None]],
        functions: tuple[str, ...] = (),
    ) -> list[str]:
        missing = []
        for table, privileges in needs.items():
            for privilege, columns in privileges.items():
                if columns is None:
                    ok = conn.execute(
                        "SELECT has_table_privilege(%s, %s) AS ok", (table, privilege)
                    ).fetchone()["ok"]
                    if not ok:
                        missing.append(f"{privilege} on {table}")
                    continue
                lacking = [
                    c
                    for c in columns
                    if not conn.execute(
                        "SELECT has_column_privilege(%s, %s, %s) AS ok", (table, c, privilege)
                    ).fetchone()["ok"]
                ]
                if lacking:
                    missing.append(f"{privilege} ({', '.join(lacking)}) on {table}")
        for function in functions:
            if not conn.execute(
                "SELECT has_function_privilege(%s, 'EXECUTE') AS ok", (function,)
            ).fetchone()["ok"]:
                missing.append(f"EXECUTE on {function}")
        return missing

    def check_cron(self, conn) -> None:
        access = conn.execute(queries()["cron_access"]).fetchone()
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()["rolsuper"]
        database = conn.execute("SELECT current_database() AS db").fetchone()["db"]
        if not access["here"]:
            self.check_cron_elsewhere(conn, database, superuser)
            return
        if not access["readable"]:
            # a grant would show it nothing: pg_cron shows a role only its own jobs
            self.add(
                "pg_cron",
                "warn",
                "pg_cron is in this database, and this role may not read its jobs (schema "
                "cron; pg_cron shows a role only its own jobs): an admin checks with "
                f"`{admin_look(database)}`; {ticks_seen(access['last_cron_tick_age_s'])}",
            )
            return
        job = conn.execute(queries()["cron_job"], {"database": database}).fetchone()
        self.judge_cron_job(job, superuser)

    def check_cron_elsewhere(self, conn, database: str, superuser: bool) -> None:
        """pg_cron runs in another database (RDS, Cloud SQL: postgres). The job that ticks
        this one was made there (cron.schedule_in_database) and is only visible from there."""
        seen = self.cron_ticks_seen(conn)
        cron_database = self.env.get("PGPULSE_CRON_DATABASE") or None
        if cron_database is None:
            try:
                with conn.transaction():
                    where = conn.execute("""
                        SELECT 'pg_cron' = ANY (string_to_array(replace(
                                   current_setting('shared_preload_libraries'), ' ', ''), ','))
                                   AS preloaded,
                               current_setting('cron.database_name', true) AS cron_db""").fetchone()
            except psycopg.errors.InsufficientPrivilege:
                self.add(
                    "pg_cron",
                    "warn",
                    "not in this database, and this role may not read "
                    "cron.database_name to find it: set PGPULSE_CRON_DATABASE=NAME (RDS, "
                    f"Cloud SQL: postgres) to check the pgpulse-tick job there; {seen}",
                )
                return
            if not where["preloaded"]:
                self.add(
                    "pg_cron",
                    "warn",
                    "pg_cron is not in shared_preload_libraries: something "
                    f"else must run `pgpulse tick` every minute; {seen}",
                )
                return
            cron_database = where["cron_db"]
        try:
            with (
                self.connect(
                    psycopg.conninfo.make_conninfo(self.dsn or "", dbname=cron_database)
                ) as cron,
                pinned(cron),
            ):
                job = cron.execute(queries()["cron_job"], {"database": database}).fetchone()
        except psycopg.errors.UndefinedTable:
            self.add(
                "pg_cron",
                "warn",
                f"pg_cron is not created in database {cron_database} "
                "(CREATE EXTENSION pg_cron there, or set PGPULSE_CRON_DATABASE to the "
                f"database it is in): nothing there ticks this one; {seen}",
            )
            return
        except psycopg.Error as exc:
            self.add(
                "pg_cron",
                "warn",
                f"pg_cron runs in database {cron_database}, and this "
                f"role cannot read its jobs there ({describe(exc)}): an admin checks there "
                f"with `{admin_look(database)}`; {seen}",
            )
            return
        self.judge_cron_job(job, superuser, cron_database, seen)

    def cron_ticks_seen(self, conn) -> str:
        """What this database shows of pg_cron without seeing its jobs: its latest tick."""
        return ticks_seen(conn.execute(queries()["last_cron_tick"]).fetchone()["age_s"])

    def judge_cron_job(
        self,
        job: dict[str, Any] | None,
        superuser: bool,
        cron_database: str | None = None,
        seen: str = "",
    ) -> None:
        where = f" (pg_cron's database {cron_database})" if cron_database else ""
        seen = f"; {seen}" if seen else ""
        if job is None and not superuser:
            # pg_cron shows each role only its own jobs
            self.add(
                "pg_cron",
                "warn",
                f"no pgpulse-tick job for this database visible to this "
                f"role{where}: run `pgpulse doctor` as the role that scheduled it to see "
                f"it{seen}",
            )
        elif job is None and cron_database:
            # pgpulse migrate schedules it there only when told where pg_cron is
            self.add(
                "pg_cron",
                "warn",
                f"no pgpulse-tick job ticks this database{where}: "
                f"`pgpulse migrate --cron-database {cron_database}` schedules it, or "
                f"something else must run `pgpulse tick` every minute{seen}",
            )
        elif job is None:
            self.add("pg_cron", "FAIL", "no pgpulse-tick job: run `pgpulse migrate` as a superuser")
        elif not job["active"]:
            self.add("pg_cron", "FAIL", f"job pgpulse-tick{where} ({job['schedule']}) is inactive")
        elif job["last_status"] == "failed":
            self.add(
                "pg_cron",
                "FAIL",
                f"job pgpulse-tick{where}'s last run failed: "
                f"{(job['last_message'] or '').strip()[:200]}",
            )
        elif job["last_start"] is None:
            self.add(
                "pg_cron", "warn", f"job pgpulse-tick{where} ({job['schedule']}) has not run yet"
            )
        else:
            self.add(
                "pg_cron",
                "ok",
                f"job pgpulse-tick{where} '{job['schedule']}', last run "
                f"{job['last_status']} at {job['last_start']:%Y-%m-%d %H:%M:%S %Z}",
            )

    def check_recent_tick(self, conn) -> None:
        limit = OpsSettings().alert_deadman_s
        age = conn.execute(queries()["last_good_tick"]).fetchone()["age_s"]
        if age is None:
            self.add("recent tick", "FAIL", "no tick has ever finished")
        elif age > limit:
            self.add(
                "recent tick",
                "FAIL",
                f"the latest tick finished {age:.0f} s ago "
                f"(over {limit:.0f} s): monitors are not scheduled",
            )
        else:
            self.add("recent tick", "ok", f"the latest tick finished {age:.0f} s ago")

    def check_scheduling(self, conn) -> None:
        """A tick that ran is not enough: the monitors it should have taken must be taken.
        FAIL when active monitors are overdue (no tick scheduled them) or the latest tick
        skipped some; warn for parked monitors and ones no region can take."""
        health = conn.execute(queries()["schedule_health"]).fetchone()
        problems, notes = [], []
        if health["overdue"]:
            problems.append(f"{health['overdue']} active monitors overdue by more than 90 s")
        if health["skipped"]:
            problems.append(
                f"tick {health['tick_id']} skipped {health['skipped']}: {health['skip_detail']}"
            )
        if health["unrouted"]:
            notes.append(f"{health['unrouted']} due monitors no region can take")
        if health["follow_pending"] and health["follow_oldest_s"] > 120:
            problems.append(
                f"{health['follow_pending']} product rows of bulk writes not followed for "
                f"{health['follow_oldest_s']:.0f} s (no relay or tick follows them)"
            )
        elif health["follow_pending"]:
            notes.append(f"{health['follow_pending']} product rows of bulk writes being followed")
        if health["parked"]:
            notes.append(
                f"{health['parked']} active monitors parked, e.g. {health['parked_reason']} "
                "(SELECT * FROM pgpulse.monitor_schedule WHERE parked IS NOT NULL)"
            )
        following = conn.execute(queries()["following"]).fetchone()
        if not following["ok"]:
            problems.append(following["detail"] + " (then `pgpulse resync`)")
        try:
            with conn.transaction():
                drift = conn.execute(queries()["drift"]).fetchone()
        except psycopg.errors.InsufficientPrivilege as exc:
            notes.append(
                f"drift not checked ({describe(exc)}): `pgpulse resync --dry-run` as a role "
                "that may read public.monitors compares the schedule with it"
            )
        except psycopg.Error as exc:
            notes.append(f"drift not checked: {describe(exc)}")
        else:
            if drift["missing"] or drift["orphaned"] or drift["differing"]:
                problems.append(
                    f"the schedule drifted from public.monitors ({drift['product_rows']} rows):"
                    f" {drift['missing']} missing, {drift['orphaned']} orphaned,"
                    f" {drift['differing']} differing: run `pgpulse resync`"
                )
        published = [
            r["pubname"]
            for r in conn.execute(
                "SELECT DISTINCT pubname FROM pg_catalog.pg_publication_tables"
                " WHERE schemaname = 'pgpulse' ORDER BY 1"
            )
        ]
        if published:
            notes.append(
                f"pgpulse's tables are in publication(s) {', '.join(published)}: the schedule"
                " and the outbox change every interval of every monitor, which replicas and"
                " CDC consumers then carry (publish the product's tables by name instead)"
            )
        if problems:
            self.add("scheduling", "FAIL", "; ".join(problems + notes))
        elif notes:
            self.add("scheduling", "warn", "; ".join(notes))
        else:
            self.add("scheduling", "ok", "every active monitor is scheduled")

    def skew_verdict(self, found: Skew) -> str:
        try:
            warn_s = RelaySettings.from_env(self.env).clock_skew_warn_s
        except ConfigError:  # reported under "settings"
            warn_s = RelaySettings().clock_skew_warn_s
        if abs(found.seconds) > max(SKEW_FAIL_S, warn_s):
            return "FAIL"
        return "warn" if abs(found.seconds) > warn_s else "ok"

    def check_clock(self, conn) -> None:
        self.database_clock = found = postgres_skew(conn)
        self.add("clock skew", self.skew_verdict(found), found.describe("database", "this host"))

    def check_regions(self, regions: list[dict[str, Any]]) -> None:
        if not regions:
            self.add("regions", "FAIL", "no enabled region: `pgpulse region add CODE`")
            return
        self.region_rows = {r["code"]: r for r in regions}
        for found in asyncio.run(self._probe_all([r["code"] for r in regions])):
            for name, verdict, detail in found:
                self.add(name, verdict, detail)

    async def _probe_all(self, codes: list[str]) -> list[list[tuple[str, str, str]]]:
        return await asyncio.gather(*(self._probe(code) for code in codes))

    async def _probe(self, code: str) -> list[tuple[str, str, str]]:
        """The region's line, and its Redis clock against PostgreSQL's (TIME: the push
        script judges expiry by it)."""
        from relay.delivery.upstash import UpstashClient

        name = f"region {code}"
        try:
            endpoint = region_endpoint(code, self.env)
        except ConfigError as exc:
            return [(name, "FAIL", str(exc))]
        shown = urlsplit(endpoint.url)._replace(query="").geturl()
        client = UpstashClient(endpoint, timeout=5.0, retry_window=0)
        started = time.perf_counter()
        try:
            pong = await client.command("PING")
            ms = (time.perf_counter() - started) * 1000
            sha = await client.command("SCRIPT", "LOAD", PUSH_SCRIPT)
            clock = await self._redis_clock(client, code)
            workers = await self._workers(client, code)
        except PgPulseError as exc:
            hint = f" (check UPSTASH_REDIS_REST_URL_{env_suffix(code)} / _TOKEN_{env_suffix(code)})"
            return [(name, "FAIL", f"{shown}: {exc}{hint}")]
        finally:
            await client.aclose()
        found = [
            (name, "ok", f"{shown}: PING {pong} in {ms:.0f} ms, push script {sha[:12]} loaded")
        ]
        return found + ([clock] if clock else []) + [workers]

    async def _workers(self, client, code: str) -> tuple[str, str, str]:
        """The region's workers: their heartbeats, and the relay's verdict (regions.
        workers_absent): FAIL while absent, its monitors go elsewhere or nowhere."""
        from relay.worker.protocol import ALIVE_S, workers_key

        name = f"workers {code}"
        seconds, micros = await client.command("TIME")
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        known = int(await client.command("ZCARD", workers_key(code)))
        alive = int(
            await client.command("ZCOUNT", workers_key(code), now_ms - int(ALIVE_S * 1000), "+inf")
        )
        row = getattr(self, "region_rows", {}).get(code) or {}
        if row.get("workers_absent"):
            since = row.get("workers_absent_s") or 0
            fallback = row.get("fallback_region") or "the default region"
            return (
                name,
                "FAIL",
                f"workers absent for {since:.0f} s ({alive} alive now): its monitors that may "
                f"fall back go to {fallback}, the others are not checked; start "
                f"`pgpulse worker --region {code}`, or DEL {workers_key(code)} to forget "
                "workers that are gone for good",
            )
        if not known:
            return (
                name,
                "ok",
                "no worker heartbeat ever (version 1 consumers, or none yet): pgpulse cannot "
                "tell whether its jobs are taken",
            )
        return name, "ok" if alive else "warn", f"{alive} alive (heartbeat within {ALIVE_S:.0f} s)"

    async def _redis_clock(self, client, code: str) -> tuple[str, str, str] | None:
        name = f"clock skew region {code}"
        if self.database_clock is None:
            return None  # (the database clock was not read: nothing to compare with)
        try:
            found = (await redis_skew(client)).against(self.database_clock)
        except (ValueError, TypeError):
            return name, "FAIL", "TIME answered something that is not [seconds, microseconds]"
        verdict = self.skew_verdict(found)
        why = " (Redis judges job expiry by it)" if verdict != "ok" else ""
        return name, verdict, found.describe("Redis", "PostgreSQL") + why


def run(env: dict[str, str] | None = None, dsn: str | None = None) -> list[Check]:
    return Doctor(env, dsn).run()


def render(checks: list[Check]) -> Iterator[str]:
    for c in checks:
        yield f"{c.verdict:<4}  {c.name}: {c.detail}"


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {
        "ok": not any(c.verdict == "FAIL" for c in checks),
        "checks": [asdict(c) for c in checks],
    }
