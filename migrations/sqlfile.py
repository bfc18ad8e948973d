"""Revisions are thin: each applies SQL files kept under sql/ or migrations/sql/."""

import sys
from pathlib import Path

from alembic import op
from sqlalchemy import Connection, text

from relay.errors import UserInputError

ROOT = Path(__file__).resolve().parent.parent
# Release 0.2.0's schema opens with CREATE SCHEMA pgpulse, but Alembic's version table lives
# in that schema and so exists before the revision runs: the schema steps aside meanwhile.
SCHEMA = "migrations/sql/0.2.0.sql"
FOLLOW = "migrations/sql/0.2.0_follow.sql"
# (to_regnamespace, not a cast: a host's own Alembic env has made no schema pgpulse)
_ONLY_VERSION_TABLE = r"""
SELECT to_regnamespace('pgpulse') IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM pg_class
                    WHERE relnamespace = to_regnamespace('pgpulse')
                      AND relname NOT LIKE 'alembic\_version%')
   AND NOT EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = to_regnamespace('pgpulse'))
"""

_STEP_ASIDE = "ALTER SCHEMA pgpulse RENAME TO pgpulse_installing;"
_HAND_OVER = (
    "ALTER TABLE pgpulse_installing.alembic_version SET SCHEMA pgpulse;\n"
    "DROP SCHEMA pgpulse_installing;"
)


# The roles and the pg_cron jobs are one idempotent step, the head revision's SETUP (its
# copies of sql/roles.sql, sql/cron.sql), run after every upgrade that ends at head (finish)
# and by the revision itself where a host's Alembic runs it: only the last run's warnings say
# how things stand, so they are held and printed once, at the end.
SETUP_KINDS = ("roles", "cron")


def _setup_kind(rel: str) -> str | None:
    name = rel.rsplit("/", 1)[-1]
    return next((kind for kind in SETUP_KINDS if name.endswith(f"_{kind}.sql")), None)


def _run_state(config) -> dict:
    """This run's held setup warnings, the files it applied, and what its setups created
    outside schema pgpulse."""
    fresh: dict = {"warnings": {}, "applied": set(), "created": set()}
    if config is None:
        return fresh
    return config.attributes.setdefault("pgpulse_setup", fresh)


# What a setup file may create outside schema pgpulse: the roles (the cluster's) and the
# pg_cron extension (this database's). What exists after a setup and not before it is
# recorded in pgpulse.created when the run ends (finish): `pgpulse migrate --downgrade base`
# removes only that.
_OUTSIDE = """
SELECT 'role', rolname FROM pg_catalog.pg_roles
 WHERE rolname IN ('pgpulse_relay', 'pgpulse_ticker', 'pgpulse_owner', 'pgpulse_monitor')
UNION ALL
SELECT 'extension', extname FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'
"""
_RECORD = """
INSERT INTO pgpulse.created (kind, name) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT DO NOTHING
"""


def apply(*relative_paths: str) -> None:
    """Run each file as one script on the migration's connection; show server warnings.
    Offline (`pgpulse migrate --sql`), print each file instead, for an empty database."""
    context = op.get_context()
    state = _run_state(context.config)
    if context.as_sql:
        for rel in relative_paths:
            sql = (ROOT / rel).read_text()
            if rel == SCHEMA:  # the offline script made schema pgpulse for the version table
                sql = "\n".join([_STEP_ASIDE, sql, _HAND_OVER])
            state["applied"].add(rel)
            context.impl.static_output(sql.rstrip() + "\n")
        return
    # the psycopg connection itself (inside Alembic's transaction): no parameter parsing
    raw = op.get_bind().connection.driver_connection
    assert raw is not None  # Alembic's connection is open: it runs this revision
    # a dry run (relay.migrate.would_drop) is rolled back: what it says would mislead
    quiet = context.config is not None and "dry_run" in context.config.attributes
    # a revision may SET LOCAL search_path (0006 does): Alembic's own statements after it,
    # on a host's unqualified alembic_version, must still find their table
    search_path = raw.execute("SELECT current_setting('search_path')").fetchone()[0]
    for rel in relative_paths:
        _run_file(raw, rel, state, quiet=quiet)
    raw.execute("SELECT set_config('search_path', %s, true)", (search_path,))


def _run_file(raw, rel: str, state: dict, *, quiet: bool = False) -> None:
    sql = (ROOT / rel).read_text()
    kind = _setup_kind(rel)
    held: list[str] = []
    if quiet:
        notices = _ignore
    elif kind:
        state["warnings"][kind] = held  # replaces what an earlier setup of this run said

        def notices(diag) -> None:
            line = _warning_line(diag)
            if line:
                held.append(line)

    else:
        notices = _print_warning
    before = set(raw.execute(_OUTSIDE).fetchall()) if kind and not quiet else set()
    raw.add_notice_handler(notices)
    try:
        if rel == SCHEMA and raw.execute(_ONLY_VERSION_TABLE).fetchone()[0]:
            _apply_beside_version_table(raw, sql)
        else:
            raw.execute(sql)
    finally:
        raw.remove_notice_handler(notices)
    if kind and not quiet:
        state["created"] |= set(raw.execute(_OUTSIDE).fetchall()) - before
    state["applied"].add(rel)


def head_setup(script) -> tuple[str, ...]:
    """The head revision's SETUP: its copies of sql/roles.sql and sql/cron.sql."""
    return tuple(getattr(script.get_revision("head").module, "SETUP", ()))


def finish(context, head_setup: tuple[str, ...] = ()) -> None:
    """The end of a run of pgpulse's revisions (migrations/env.py, or a host's env.py through
    relay.migrate): after an upgrade that ends at head, head_setup is the head revision's
    SETUP, its copies of sql/roles.sql and sql/cron.sql; they are applied again unless a
    revision of this run just did, so a second `pgpulse migrate`, after an admin fixed what
    was missing, finishes the setup. Then the setup's warnings are printed, each once."""
    state = _run_state(context.config)
    for rel in head_setup:
        if rel not in state["applied"]:
            if context.as_sql:
                context.impl.static_output((ROOT / rel).read_text().rstrip() + "\n")
                state["applied"].add(rel)
            else:  # in a transaction of its own, after the revisions' (and a read's) ended
                if context.bind.in_transaction():
                    context.bind.commit()
                with context.bind.begin():
                    _run_file(context.bind.connection.driver_connection, rel, state)
    created = sorted(state["created"])
    state["created"] = set()
    if created and not context.as_sql:
        if context.bind.in_transaction():
            context.bind.commit()
        with context.bind.begin():
            raw = context.bind.connection.driver_connection
            if _exists(raw, "pgpulse.created"):  # (a run that ended before 0.2.0 has none)
                raw.execute(_RECORD, ([k for k, _ in created], [n for _, n in created]))
    for kind in SETUP_KINDS:
        for line in state["warnings"].pop(kind, []):
            print(line, file=sys.stderr)


def _exists(raw, table: str) -> bool:
    return raw.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


def _apply_beside_version_table(raw, sql: str) -> None:
    """The schema that holds only the version table steps aside while 0.2.0.sql creates
    pgpulse, then hands the version table over."""
    raw.execute(_STEP_ASIDE)
    raw.execute(sql)
    raw.execute(_HAND_OVER)


def _ignore(diag) -> None:
    pass


def _warning_line(diag) -> str | None:
    if diag.severity_nonlocalized in ("WARNING", "NOTICE") and diag.message_primary.startswith(
        "pgpulse"
    ):
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        return f"{diag.message_primary}{hint}"
    return None


def _print_warning(diag) -> None:
    line = _warning_line(diag)
    if line:
        print(line, file=sys.stderr)


def move_version_out_of_public(connection: Connection, revisions: set[str]) -> None:
    """Installs older than 0002 kept their version row in public.alembic_version: move that
    row (only a pgpulse revision, only where pgpulse is installed) to pgpulse.alembic_version.
    A host's own rows stay; the table is dropped only when nothing else is left in it."""
    found = connection.execute(
        text(
            "SELECT to_regclass('pgpulse.alembic_version') IS NULL"
            "   AND to_regclass('public.alembic_version') IS NOT NULL"
            "   AND to_regclass('pgpulse.outbox') IS NOT NULL"
        )
    ).scalar()
    if not found:
        return
    ours = [
        v
        for (v,) in connection.execute(text("SELECT version_num FROM public.alembic_version"))
        if v in revisions
    ]
    if not ours:
        return
    connection.execute(
        text(
            "CREATE TABLE pgpulse.alembic_version (version_num varchar(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    for version in ours:
        connection.execute(text("INSERT INTO pgpulse.alembic_version VALUES (:v)"), {"v": version})
        connection.execute(
            text("DELETE FROM public.alembic_version WHERE version_num = :v"), {"v": version}
        )
    if connection.execute(
        text("SELECT NOT EXISTS (SELECT 1 FROM public.alembic_version)")
    ).scalar():
        connection.execute(text("DROP TABLE public.alembic_version"))


# ------------------------------------------------------------------ legacy installs

# Revisions 0001-0016 were never released; their files are gone. A database one of them
# migrated (created or adopted, its version row in pgpulse.alembic_version, or before 0002 in
# public.alembic_version) is converted to 0.2.0 before Alembic reads its version, which
# Alembic could no longer resolve.
LEGACY = tuple(f"{n:04d}" for n in range(1, 17))
CONVERSION = (
    "migrations/legacy/before.sql",
    SCHEMA,
    "migrations/legacy/after.sql",
    FOLLOW,
    "migrations/legacy/stamp.sql",
)


class LegacyRefused(UserInputError):
    """A legacy state the conversion does not take; the message says what to do."""


def legacy_revision(connection: Connection) -> str | None:
    """The legacy revision pgpulse's version row names, or None; refuses a mixed state."""
    found: list[str] = []
    for table in ("pgpulse.alembic_version", "public.alembic_version"):
        if connection.execute(text(f"SELECT to_regclass('{table}') IS NOT NULL")).scalar():
            found += [
                v
                for (v,) in connection.execute(text(f"SELECT version_num FROM {table}"))
                if v in LEGACY or v == "0.2.0"
            ]
    legacy = [v for v in found if v in LEGACY]
    if not legacy:
        return None
    if len(found) > 1:
        raise LegacyRefused(
            f"pgpulse's version rows name {', '.join(sorted(found))}: one install cannot be at "
            "several revisions; delete the rows that do not match the schema, then run "
            "`pgpulse migrate` again"
        )
    if not connection.execute(text("SELECT to_regclass('pgpulse.outbox') IS NOT NULL")).scalar():
        raise LegacyRefused(
            f"the version row says pgpulse revision {legacy[0]}, but schema pgpulse has no "
            "outbox: restore the schema from a backup, or delete the row to install afresh"
        )
    return legacy[0]


def convert_legacy(connection: Connection, config=None) -> str | None:
    """Converts a legacy install to 0.2.0 in one transaction (migrations/legacy/); returns
    the legacy revision it converted, or None when there was none."""
    if connection.in_transaction():
        connection.commit()
    with connection.begin():
        legacy = legacy_revision(connection)
        if legacy is None:
            return None
        raw = connection.connection.driver_connection
        state = _run_state(config)
        for rel in CONVERSION:
            _run_file(raw, rel, state)
    return legacy


def conversion_sql() -> str:
    """The conversion as one script, for `pgpulse migrate --sql --from 00NN`."""
    return "\n".join(
        ["BEGIN;"] + [(ROOT / rel).read_text().rstrip() for rel in CONVERSION] + ["COMMIT;", ""]
    )
