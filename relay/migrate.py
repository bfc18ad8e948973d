"""`pgpulse migrate`: Alembic upgrades and downgrades from Python, with one-line errors.

Alembic is configured here, in code, so the installed wheel needs no alembic.ini (the
repository keeps one for people who run `alembic` themselves)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import alembic.util
import psycopg
import psycopg.conninfo
import psycopg.errors
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from psycopg.rows import dict_row

from relay.config import sqlalchemy_url
from relay.db import DatabaseError, connect, describe, one
from relay.errors import DowngradeDropsData, UserInputError
from relay.resources import migrations_dir


def version_location() -> Path:
    """pgpulse's revisions, for a host's own Alembic `version_locations`; makes the module
    name its revisions import (`migrations.sqlfile`) resolve to pgpulse's copy."""
    location = migrations_dir()
    _register_migrations_package(location)
    return location / "versions"


def run_pgpulse_migrations(connection, revision: str = "head") -> None:
    """For a product's own Alembic env.py, in run_migrations_online after its own
    `context.run_migrations()` (its transaction ended), on the same SQLAlchemy connection:
    upgrades pgpulse's own history, kept in pgpulse.alembic_version, then applies the roles
    and pg_cron set-up as `pgpulse migrate` does. The product's history keeps its single
    head, so its usual `alembic upgrade head` upgrades both (docs/adopting.md)."""
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import text

    from migrations.sqlfile import (
        convert_legacy,
        finish,
        head_setup,
        move_version_out_of_public,
    )

    config = alembic_config(None)
    script = ScriptDirectory.from_config(config)
    with _database_errors(revision):
        if connection.in_transaction():
            connection.commit()
        with connection.begin():
            connection.execute(text("CREATE SCHEMA IF NOT EXISTS pgpulse"))
            move_version_out_of_public(connection, {r.revision for r in script.walk_revisions()})
        convert_legacy(connection, config)
        # an environment of its own, never installed as alembic.context: the product's
        # env.py keeps its own; run_migrations makes `op` this history's while it runs
        env = EnvironmentContext(
            config,
            script,
            fn=lambda current, _context: script._upgrade_revs(revision, current),
            destination_rev=revision,
        )
        env.configure(
            connection=connection, transaction_per_migration=True, version_table_schema="pgpulse"
        )
        with env.begin_transaction():
            env.run_migrations()
        migration = env.get_context()
        at_head = set(migration.get_current_heads()) == set(script.get_heads())
        finish(migration, head_setup(script) if at_head else ())
        if connection.in_transaction():
            connection.commit()


def add_to_alembic(script) -> None:
    """Superseded by run_pgpulse_migrations, which keeps the host's single head: for a host's
    own Alembic env.py, `add_to_alembic(context.script)`, before run_migrations, lists
    pgpulse's revisions (branch `pgpulse`) beside the host's, so `alembic upgrade heads`
    (not `head`) upgrades both. Alembic
    reads version_locations before env.py runs, so setting that option there is too late;
    the revisions themselves are loaded only once the migrations run."""
    ours = str(version_location())
    listed = [str(v) for v in script.version_locations or [Path(script.dir, "versions")]]
    if ours not in listed:
        script.version_locations = [*listed, ours]
        script.__dict__.pop("_version_locations", None)  # Alembic memoizes the paths


def _register_migrations_package(location: Path) -> None:
    known = sys.modules.get("migrations")
    if known is not None:
        if Path(getattr(known, "__file__", "") or "").resolve().parent != location.resolve():
            raise DatabaseError(
                "another package named `migrations` is loaded in this process; "
                "pgpulse's revisions import migrations.sqlfile from their own"
            )
        return
    spec = importlib.util.spec_from_file_location(
        "migrations", location / "__init__.py", submodule_search_locations=[str(location)]
    )
    assert spec is not None and spec.loader is not None  # a file location always has both
    module = importlib.util.module_from_spec(spec)
    sys.modules["migrations"] = module
    spec.loader.exec_module(module)


def alembic_config(dsn: str | None, *, output: TextIO | None = None) -> Config:
    location = migrations_dir()
    _register_migrations_package(location)
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("path_separator", "os")
    config.attributes["dsn"] = dsn
    return config


@contextlib.contextmanager
def _database_errors(*asked: str | None) -> Iterator[None]:
    """Alembic's and the database's errors as one line naming the problem and the fix;
    `asked`: the revisions the command named (a revision not found is theirs, or the
    database's)."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        orig = exc.orig
        message = describe(orig) if isinstance(orig, psycopg.Error) else str(orig)
        if exc.statement is None:  # connecting failed
            raise DatabaseError(
                f"cannot connect to the database: {message}; check DATABASE_URL or --database-url"
            ) from exc
        if isinstance(orig, psycopg.errors.InsufficientPrivilege):
            raise DatabaseError(
                f"migration failed: {message}; run `pgpulse migrate` as the database's owner "
                "or a superuser, or have one run the SQL that `pgpulse migrate --sql` prints"
            ) from exc
        raise DatabaseError(f"migration failed: {message}") from exc
    except alembic.util.CommandError as exc:
        raise UserInputError(_command_error(str(exc), asked)) from exc


def _command_error(message: str, asked: tuple[str | None, ...]) -> str:
    unknown = re.match(r"Can't locate revision identified by '([^']*)'", message)
    if unknown is None:
        return message.splitlines()[0] if message else "Alembic refused the command"
    script = ScriptDirectory.from_config(alembic_config(None))
    known = [r.revision for r in reversed(list(script.walk_revisions()))]
    listing = f"{known[0]} to {known[-1]} (head), or base"
    wanted = unknown.group(1)
    if any(wanted in (a or "") for a in asked):
        return f"no revision {wanted!r}: pgpulse's revisions are {listing}"
    from relay import __version__

    return (
        f"the database is at revision {wanted!r}, which pgpulse {__version__} does not know "
        "(a newer pgpulse migrated it): run `pgpulse migrate` with that pgpulse"
    )


def upgrade(dsn: str, revision: str = "head", cron_database: str | None = None) -> None:
    """cron_database: where pg_cron runs when that is not this database (RDS, Cloud SQL:
    `postgres`); the tick is then scheduled from there for this one."""
    with _database_errors(revision):
        command.upgrade(alembic_config(dsn), revision)
    if cron_database:
        schedule_in_cron_database(dsn, cron_database)


def downgrade(
    dsn: str, revision: str = "base", cron_database: str | None = None, *, force: bool = False
) -> None:
    """Refuses (DowngradeDropsData) a downgrade that would drop rows or values that differ
    from their column's default, unless force."""
    legacy = legacy_revision(dsn)
    if legacy:
        raise UserInputError(
            f"the database is at legacy revision {legacy}, which pgpulse converts only "
            "upward: run `pgpulse migrate` first, then downgrade"
        )
    if not force:
        lost = would_drop(dsn, revision)
        if lost:
            raise DowngradeDropsData(
                f"--downgrade {revision} would drop {_and(lost)}; add --force to drop them"
            )
    created = read_created(dsn) if revision == "base" else None
    if cron_database and revision == "base":
        unschedule_in_cron_database(dsn, cron_database)
    with _database_errors(revision):
        command.downgrade(alembic_config(dsn), revision)
    if created is not None:
        for line in remove_created(dsn, created):
            print(f"pgpulse: {line}", file=sys.stderr)


# ------------------------------------------------- what pgpulse created outside its schema

ROLES = ("pgpulse_monitor", "pgpulse_relay", "pgpulse_ticker", "pgpulse_owner")
# (the pgpulse roles aside: they go together) and why each holds on to a role
_ROLE_USES = """
SELECT (SELECT array_agg(m.rolname::text ORDER BY m.rolname) FROM pg_auth_members a
          JOIN pg_roles m ON m.oid = a.member
         WHERE a.roleid = r.oid AND m.rolname <> ALL (%(ours)s::text[])
           -- a migrating role that is not superuser was made a member to hand functions over
           AND NOT (r.rolname = 'pgpulse_owner' AND m.rolname = current_user)) AS members,
       (SELECT count(*) FROM pg_stat_activity WHERE usesysid = r.oid) AS sessions
  FROM pg_roles r WHERE r.rolname = %(role)s
"""
# what a role owns or holds rights on, per database: pg_shdepend is the cluster's, so this
# database sees every other one's entries too (counted, not named: their catalogs are theirs)
_ROLE_DEPENDENTS = """
SELECT coalesce(d.datname, 'the cluster (databases, tablespaces)') AS place, count(*) AS n,
       s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS here
  FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid
 WHERE s.refclassid = 'pg_authid'::regclass
   AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
 GROUP BY 1, 3 ORDER BY 1
"""
UNSEEN = (
    "(what one database cannot show: pg_cron jobs in another database that run as a removed "
    "role, and pg_hba.conf or .pgpass lines that name it)"
)


def read_created(dsn: str) -> set[tuple[str, str]]:
    """What `pgpulse migrate` recorded creating outside schema pgpulse (pgpulse.created)."""
    with connect(dsn) as conn:
        if not one(
            conn.execute("SELECT to_regclass('pgpulse.created') IS NOT NULL AS t").fetchone()
        )["t"]:
            return set()
        return {
            (r["kind"], r["name"]) for r in conn.execute("SELECT kind, name FROM pgpulse.created")
        }


def remove_created(dsn: str, created: set[tuple[str, str]]) -> list[str]:
    """After a downgrade to base: removes the pg_cron extension and the roles that pgpulse
    created (`created`) where nothing else uses them; says what it removed and what it kept,
    and why."""
    said: list[str] = []
    with connect(dsn) as conn:  # one pinned transaction; a savepoint around each removal
        cron_here = one(
            conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS here"
            ).fetchone()
        )["here"]
        if cron_here:
            cron_here = _remove_cron(conn, ("extension", "pg_cron") in created, said)
        present = [
            r["rolname"]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY (%s) ORDER BY rolname",
                (list(ROLES),),
            )
        ]
        theirs = [role for role in present if ("role", role) not in created]
        removed = False
        for role in [r for r in ROLES if r in present and r not in theirs]:
            removed |= _remove_role(conn, role, cron_here, said)
        if theirs:
            said.append(
                f"kept role{'s' if len(theirs) > 1 else ''} {', '.join(theirs)}: no record that "
                "pgpulse created them from this database (an admin, another database's "
                "`pgpulse migrate` or a pgpulse before 0.2.0 did); DROP ROLE each when "
                "nothing uses it"
            )
        if removed:
            said.append(UNSEEN)
    return said


def _remove_cron(conn, ours: bool, said: list[str]) -> bool:
    """Drops the pg_cron extension when pgpulse created it here and no job is left in it;
    returns whether it is still there."""
    if not ours:
        said.append("kept the pg_cron extension: pgpulse did not create it in this database")
        return True
    try:
        with conn.transaction():
            jobs = [
                f"{j['jobname'] or j['jobid']} ({j['username']}, database {j['database']})"
                for j in conn.execute(
                    "SELECT jobid, jobname, username, database FROM cron.job ORDER BY jobid"
                )
            ]
    except psycopg.Error as exc:
        said.append(f"kept the pg_cron extension pgpulse created: {describe(exc)}")
        return True
    sees_all = conn.execute(
        "SELECT rolsuper OR rolbypassrls AS yes FROM pg_roles WHERE rolname = current_user"
    ).fetchone()["yes"]
    if jobs:
        why = f"other jobs are scheduled in it: {', '.join(jobs[:5])}" + (
            f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
        )
    elif not sees_all:
        why = (
            "this role sees only its own pg_cron jobs and other roles' may be scheduled "
            "(a superuser runs `DROP EXTENSION pg_cron` when none are)"
        )
    else:
        try:
            with conn.transaction():
                conn.execute("DROP EXTENSION pg_cron")
        except psycopg.Error as exc:
            why = describe(exc)
        else:
            said.append("removed the pg_cron extension: pgpulse created it here, no job is left")
            return False
    said.append(f"kept the pg_cron extension pgpulse created: {why}")
    return True


def _remove_role(conn, role: str, cron_here: bool, said: list[str]) -> bool:
    """Drops a role pgpulse created when nothing else uses it; returns whether it did."""
    why = []
    uses = conn.execute(_ROLE_USES, {"role": role, "ours": list(ROLES)}).fetchone()
    if uses["members"]:
        members = ", ".join(uses["members"])
        why.append(
            f"granted to {members} (`REVOKE {role} FROM {members}` when they are done with it)"
        )
    if uses["sessions"]:
        why.append(f"{uses['sessions']} session(s) are connected as it")
    if cron_here:
        # (a role that is not superuser sees its own jobs only)
        with contextlib.suppress(psycopg.Error), conn.transaction():
            jobs = [
                j["jobname"]
                for j in conn.execute("SELECT jobname FROM cron.job WHERE username = %s", (role,))
            ]
            if jobs:
                why.append(f"pg_cron runs jobs as it: {', '.join(map(str, jobs))}")
    if not why and cron_here and role == "pgpulse_ticker":
        # pgpulse's job setup granted it; its jobs are gone
        with contextlib.suppress(psycopg.Error), conn.transaction():
            conn.execute("REVOKE USAGE ON SCHEMA cron FROM pgpulse_ticker")
    for place in conn.execute(_ROLE_DEPENDENTS, {"role": role}).fetchall():
        where = "this database" if place["here"] else place["place"]
        why.append(f"it owns objects or holds rights in {where} ({place['n']})")
    if not why:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        except psycopg.Error as exc:
            why.append(describe(exc))
        else:
            said.append(f"removed role {role}: pgpulse created it, nothing else uses it")
            return True
    said.append(f"kept role {role} (pgpulse created it): {'; '.join(why)}; then `DROP ROLE {role}`")
    return False


# What a downgrade drops is measured, not declared per revision: the downgrade first runs in
# one transaction that is rolled back (PostgreSQL's DDL is transactional), and the tables and
# columns missing from the catalog afterwards are what it would drop, whichever path an
# install took (0001 creates or adopts public.monitors; 0002 moves regions only sometimes).
# A declared list would have to know every such path and be kept in step by hand. Tables
# are matched by oid, so one moved to another schema is not lost; one dropped and rebuilt
# under its name keeps every column it still has by name. The rows are counted after the
# rollback, so a row written between the count and the real downgrade goes unmentioned:
# this guards against downgrading a database in use, not against a writer racing it.
_TABLES = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relispartition AS partition
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""
# generated columns hold nothing of their own; a default that is not a constant (now(),
# nextval) is not compared with: every value there counts as set
_COLUMNS = """
SELECT a.attrelid AS oid, a.attnum, a.attname AS name,
       CASE WHEN d.adbin::text LIKE '{CONST %'
            THEN pg_get_expr(d.adbin, d.adrelid) END AS default_value
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'p')
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
"""


# pgpulse's own bookkeeping, not data a downgrade loses: the evaluator's lease (renewed
# every round), and the record of what pgpulse created (read before a downgrade to base)
# (and follow_log: the downgrade follows its rows into the schedule, which goes back into
# the product's table, before it drops it)
_BOOKKEEPING = {("pgpulse", "leases"), ("pgpulse", "created"), ("pgpulse", "follow_log")}


@dataclass
class Catalog:
    """The tables and columns of a database, as a downgrade's dry run compares them."""

    tables: dict[int, dict]
    columns: dict[tuple[int, int], dict]

    @classmethod
    def read(cls, conn) -> Catalog:
        cur = conn.cursor(row_factory=dict_row)
        tables = {t["oid"]: t for t in cur.execute(_TABLES)}
        columns = {(c["oid"], c["attnum"]): c for c in cur.execute(_COLUMNS)}
        return cls(tables, columns)

    def lost_to(self, after: Catalog) -> tuple[list[dict], list[tuple[dict, dict]]]:
        """The tables (partitions aside: their parent's count holds them) and the columns of
        surviving tables that are here and not in `after`."""
        by_name = {(t["schema"], t["name"]): oid for oid, t in after.tables.items()}
        names_after = {(oid, c["name"]) for (oid, _), c in after.columns.items()}
        tables, columns = [], []
        for oid, table in self.tables.items():
            same = oid if oid in after.tables else by_name.get((table["schema"], table["name"]))
            if same is None:
                if not table["partition"]:
                    tables.append(table)
                continue
            for (table_oid, attnum), column in self.columns.items():
                if table_oid != oid:
                    continue
                kept = (
                    (oid, attnum) in after.columns
                    if same == oid
                    else (same, column["name"]) in names_after
                )
                if not kept:
                    columns.append((table, column))
        return tables, columns


def would_drop(dsn: str, revision: str) -> list[str]:
    """What downgrading to `revision` would drop that holds data: "schema.table (N rows)" and
    "schema.table.column (N rows set)", nothing for empty tables and default values."""
    config = alembic_config(dsn)
    measured: dict[str, Catalog] = {}
    config.attributes["dry_run"] = measured  # migrations/env.py: "before", "after"
    with _database_errors(revision):
        command.downgrade(config, revision)
    tables, columns = measured["before"].lost_to(measured["after"])
    tables = [t for t in tables if (t["schema"], t["name"]) not in _BOOKKEEPING]
    found = []
    with connect(dsn) as conn:
        for table in tables:
            name = sql.Identifier(table["schema"], table["name"])
            rows = one(
                conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(name)).fetchone()
            )
            if rows["n"]:
                found.append(f"{table['schema']}.{table['name']} ({_rows(rows['n'])})")
        for table, column in columns:
            default = sql.SQL(column["default_value"] or "NULL")  # from the catalog itself
            rows = one(
                conn.execute(
                    sql.SQL("SELECT count(*) AS n FROM {} WHERE {} IS DISTINCT FROM ({})").format(
                        sql.Identifier(table["schema"], table["name"]),
                        sql.Identifier(column["name"]),
                        default,
                    )
                ).fetchone()
            )
            if rows["n"]:
                found.append(
                    f"{table['schema']}.{table['name']}.{column['name']} ({_rows(rows['n'])} set)"
                )
    return found


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# pg_cron in another database: jobs made there with cron.schedule_in_database run as
# pgpulse_ticker (never as a superuser): the tick in the product's database, and the prune
# of the ticker's own run records in pg_cron's database, where they are kept.
TICKER = "pgpulse_ticker"
TICK_JOB = ("pgpulse-tick", "* * * * *", "CALL pgpulse.tick(p_trigger => 'pg_cron')")
PRUNE_JOB = (
    "pgpulse-prune",
    "17 3 * * *",
    "DELETE FROM cron.job_run_details"
    " WHERE coalesce(end_time, start_time) < now() - interval '7 days'",
)
CRON_JOB_NAMES = [TICK_JOB[0], PRUNE_JOB[0]]


def cron_statements(
    database: str, cron_database: str | None = None, username: str = TICKER
) -> list[sql.Composed]:
    """What an admin runs in pg_cron's database to tick pgpulse in `database` (the prune
    runs where the statements run when cron_database is not known); the prune reads the
    schema cron."""
    here = sql.Literal(cron_database) if cron_database else sql.SQL("current_database()")
    usage = sql.SQL("GRANT USAGE ON SCHEMA cron TO {};").format(sql.Identifier(username))
    return [usage] + [
        sql.SQL("SELECT cron.schedule_in_database({}, {}, {}, {}, username => {});").format(
            sql.Literal(name),
            sql.Literal(schedule),
            sql.Literal(command),
            where,
            sql.Literal(username),
        )
        for (name, schedule, command), where in (
            (TICK_JOB, sql.Literal(database)),
            (PRUNE_JOB, here),
        )
    ]


def database_name(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "")


def pg_cron_here(dsn: str) -> bool:
    with connect(dsn) as conn:
        found = conn.execute("SELECT to_regclass('cron.job') IS NOT NULL AS here").fetchone()
        return one(found)["here"]


def schedule_in_cron_database(dsn: str, cron_database: str) -> None:
    database = database_name(dsn)
    statements = cron_statements(database, cron_database)
    admin = "\n".join(f"  {s.as_string(None)}" for s in statements)
    try:
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(dsn, dbname=cron_database),
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            # only a superuser may schedule for pgpulse_ticker; a role that is not one (a
            # managed database's admin) schedules for itself, never for a superuser
            role, superuser, ticker_ready = one(
                conn.execute(
                    "SELECT current_user, rolsuper,"
                    " coalesce((SELECT rolcanlogin FROM pg_roles WHERE rolname = %s), false)"
                    " FROM pg_roles WHERE rolname = current_user",
                    (TICKER,),
                ).fetchone()
            )
            username = TICKER if superuser else role
            if superuser and not ticker_ready:
                print(
                    f'pgpulse: pg_cron in database "{cron_database}" would run the tick as '
                    f'superuser "{role}": nothing was scheduled. Let `pgpulse migrate` create '
                    f"the role {TICKER} (with CREATEROLE), or have an admin create it and "
                    f"run there:\n{admin}",
                    file=sys.stderr,
                )
                return
            # pg_cron keys a job by name and role: scheduling again under the same role
            # would only rewrite another database's job, and this one stay unticked
            taken = conn.execute(
                "SELECT database, username FROM cron.job WHERE jobname = %s"
                " AND username = %s AND database <> %s LIMIT 1",
                (TICK_JOB[0], username, database),
            ).fetchone()
            if taken is None:
                grant, *jobs = cron_statements(database, cron_database, username)
                # a role that is not superuser schedules for itself: it reads cron already
                for statement in [grant, *jobs] if superuser else jobs:
                    conn.execute(statement)
    except psycopg.Error as exc:
        print(
            f'pgpulse: could not schedule the tick from database "{cron_database}" '
            f"({describe(exc)}); an admin can run there:\n{admin}",
            file=sys.stderr,
        )
        return
    if taken is not None:
        other = "\n".join(
            f"  {s.as_string(None)}" for s in cron_statements(database, cron_database, "ROLE")
        )
        print(
            f'pgpulse: pg_cron in database "{cron_database}" already runs pgpulse\'s jobs for '
            f'database "{taken[0]}" as role "{taken[1]}", and pg_cron names jobs per role: '
            f'nothing was scheduled for database "{database}". A superuser can schedule them '
            f'there as another role (not a superuser) that may log in to "{database}" and '
            f"is granted {TICKER}:\n{other}",
            file=sys.stderr,
        )
        return
    print(
        f'pgpulse: pg_cron in database "{cron_database}" ticks database "{database}" '
        f'every minute (pgpulse-tick, as role "{username}")',
        file=sys.stderr,
    )


def unschedule_in_cron_database(dsn: str, cron_database: str) -> None:
    database = database_name(dsn)
    try:
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(dsn, dbname=cron_database),
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(
                "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = %s AND database = %s"
                " OR jobname = %s AND database = current_database()",
                (TICK_JOB[0], database, PRUNE_JOB[0]),
            )
    except psycopg.Error as exc:
        print(
            f"pgpulse: could not remove pgpulse's pg_cron jobs in database "
            f'"{cron_database}" ({describe(exc)})',
            file=sys.stderr,
        )


def legacy_revision(dsn: str) -> str | None:
    """The legacy revision (0001-0016) the database is at, or None."""
    from sqlalchemy import create_engine, pool

    _register_migrations_package(migrations_dir())
    from migrations.sqlfile import legacy_revision as read

    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    with _database_errors(), engine.connect() as connection:
        return read(connection)


def upgrade_sql(revision: str = "head", start: str | None = None) -> str:
    """The upgrade's DDL, as a DBA would run it (Alembic's offline mode): no connection.
    From an empty database unless start names the revision the database is at; from a
    legacy revision (0001-0016), the conversion to 0.2.0, then the roles and pg_cron set-up."""
    _register_migrations_package(migrations_dir())
    from migrations import sqlfile

    if start in sqlfile.LEGACY and revision == "head":
        return sqlfile.conversion_sql() + upgrade_sql("head", "head")
    out = io.StringIO()
    target = f"{start}:{revision}" if start else revision
    with _database_errors(revision, start):
        command.upgrade(alembic_config(None, output=out), target, sql=True)
    return out.getvalue()


# ------------------------------------------------------- the schema a release runs against


def schema_revision() -> str:
    """The schema revision this release's code runs against: its head revision, named after
    the release that made it (0.2.0 on; 0001-0016 were before any release)."""
    head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
    assert head is not None  # the package ships its revisions
    return head


class SchemaMismatch(DatabaseError):
    """The database's schema is another release's."""


def check_schema(dsn: str) -> None:
    """Refuses (SchemaMismatch) a database whose schema is not this release's, in one line
    naming both. A role that may not read pgpulse.alembic_version (the relay's own, see
    sql/roles.sql) is not refused: the check is the migrating role's then (`pgpulse doctor`).
    Nor is a database that cannot be reached: a relay starts into an outage and waits for it
    to end (its alerts say so); `pgpulse doctor` compares the revisions then."""
    from relay import __version__

    ours = schema_revision()
    try:
        with connect(dsn) as conn:
            row = conn.execute("SELECT version_num FROM pgpulse.alembic_version").fetchone()
    except (psycopg.errors.InsufficientPrivilege, DatabaseError):
        return
    except psycopg.errors.UndefinedTable:
        row = None
    theirs = one(row)["version_num"] if row else None
    if theirs == ours:
        return
    if theirs is None:
        raise SchemaMismatch(
            f"pgpulse {__version__} needs schema revision {ours}, and the database has no "
            f"pgpulse schema: run `pgpulse migrate` with pgpulse {__version__}"
        )
    made_by = "a pgpulse before 0.2.0" if re.fullmatch(r"\d{4}", theirs) else f"pgpulse {theirs}"
    raise SchemaMismatch(
        f"pgpulse {__version__} needs schema revision {ours}, but the database is at revision "
        f"{theirs} ({made_by}): run `pgpulse migrate` with the release you mean to run, or "
        f"run {made_by}'s relay"
    )
