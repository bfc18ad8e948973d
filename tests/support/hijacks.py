"""A hostile role's objects in public that would win over pg_catalog's in pgpulse's
expressions (the tick's, the relay's claim and upkeep, the facts and the CLI's queries): the
tests that show pgpulse's search_path is pinned plant them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from tests.support.dsn import as_user

ATTACKER = "mallory"  # a role that may create objects in public, and nothing else


# Operators, functions and aggregates that, planted in public, would win over pg_catalog's
# (pg_catalog has no exact match for these argument types, only a polymorphic or casting
# one, so an exact one elsewhere on the search_path is taken). Each computes the right
# result, so a caller still works, and logs the call in public.hijack_log. Values: the
# return type (an aggregate's state) and the body (an aggregate's next state).
HIJACKS = {
    # the tick's arithmetic
    "OPERATOR public./ (numeric, integer)": ("numeric", "$1 OPERATOR(pg_catalog./) $2::numeric"),
    "OPERATOR public.% (bigint, integer)": ("bigint", "$1 OPERATOR(pg_catalog.%) $2::bigint"),
    "OPERATOR public.* (double precision, integer)": (
        "double precision",
        "$1 OPERATOR(pg_catalog.*) $2::float8",
    ),
    "OPERATOR public.- (numeric, double precision)": (
        "double precision",
        "$1::float8 OPERATOR(pg_catalog.-) $2",
    ),
    "OPERATOR public.* (interval, integer)": ("interval", "$1 OPERATOR(pg_catalog.*) $2::float8"),
    "OPERATOR public.* (interval, numeric)": ("interval", "$1 OPERATOR(pg_catalog.*) $2::float8"),
    "FUNCTION public.to_timestamp(numeric)": ("timestamptz", "pg_catalog.to_timestamp($1::float8)"),
    # the claim's job JSON (issue 26: these could rewrite every job, URL included)
    "OPERATOR public.|| (text, uuid)": ("text", "$1 OPERATOR(pg_catalog.||) $2::text"),
    "OPERATOR public.|| (text, integer)": ("text", "$1 OPERATOR(pg_catalog.||) $2::text"),
    "OPERATOR public.|| (text, json)": ("text", "$1 OPERATOR(pg_catalog.||) $2::text"),
    "FUNCTION public.to_json(text)": ("json", "pg_catalog.to_json($1)"),
    # push intents (claim, reroutes), counts per region (backlog, dead letters)
    "FUNCTION public.unnest(uuid[])": ("SETOF uuid", "SELECT pg_catalog.unnest($1)"),
    "AGGREGATE public.count(uuid)": (
        "bigint",
        "$1 OPERATOR(pg_catalog.+) (CASE WHEN $2 IS NULL THEN 0 ELSE 1 END)::bigint",
    ),
    # tick records: durations in ms, the share of the budget used
    "OPERATOR public.* (numeric, integer)": ("numeric", "$1 OPERATOR(pg_catalog.*) $2::numeric"),
    "OPERATOR public./ (integer, numeric)": ("numeric", "$1::numeric OPERATOR(pg_catalog./) $2"),
    "OPERATOR public.= (numeric, integer)": ("boolean", "$1 OPERATOR(pg_catalog.=) $2::numeric"),
}


def plant_hijacks(conn) -> None:
    """Plants HIJACKS on conn (a non-superuser's, with CREATE on public)."""
    conn.execute(
        "CREATE TABLE public.hijack_log (called text, by_role text, "
        "at timestamptz DEFAULT clock_timestamp())"
    )
    conn.execute("GRANT INSERT ON public.hijack_log TO PUBLIC")
    for n, (signature, (returns, body)) in enumerate(HIJACKS.items()):
        kind, rest = signature.split(" ", 1)
        args = signature[signature.index("(") + 1 : -1]
        log = (
            f"INSERT INTO public.hijack_log (called, by_role) VALUES ('{signature}', current_user)"
        )
        if kind == "FUNCTION":
            name = rest[: rest.index("(")].removeprefix("public.")
        else:
            name = f"hijack_{n}"
        if kind == "AGGREGATE":  # the state function logs each row it sees
            params, returns = f"{returns}, {args}", returns
        else:
            params = args
        result = f"RETURN QUERY {body}" if returns.startswith("SETOF") else f"RETURN {body}"
        conn.execute(f"""
            CREATE FUNCTION public.{name}({params}) RETURNS {returns} LANGUAGE plpgsql AS $f$
            BEGIN
                {log};
                {result};
            END $f$""")
        if kind == "OPERATOR":
            op = rest.split()[0].removeprefix("public.")
            left, right = (a.strip() for a in args.split(","))
            conn.execute(
                f"CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right}, "
                f"FUNCTION = public.{name})"
            )
        elif kind == "AGGREGATE":
            aggregate = rest[: rest.index("(")]
            conn.execute(
                f"CREATE AGGREGATE {aggregate}({args}) "
                f"(SFUNC = public.{name}, STYPE = {returns}, INITCOND = '0')"
            )
    assert not conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]


def hijack_calls(conn) -> list:
    return conn.execute("SELECT called, by_role FROM public.hijack_log").fetchall()


@contextlib.contextmanager
def planted(db_url: str) -> Iterator[None]:
    """HIJACKS planted in db_url's database by ATTACKER (created here, with CREATE on public
    and nothing else; dropped at the end with everything it owns)."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {ATTACKER} LOGIN")
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {ATTACKER}")
    try:
        with psycopg.connect(as_user(db_url, ATTACKER), autocommit=True) as mallory:
            plant_hijacks(mallory)
        yield
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {ATTACKER}")
            admin.execute(f"DROP ROLE {ATTACKER}")
