"""A hostile role's objects in public that would win over pg_catalog's in the tick's
expressions: the tests that show the tick's search_path is pinned plant them."""

from __future__ import annotations

ATTACKER = "mallory"  # a role that may create objects in public, and nothing else


# Operators and functions that, planted in public, would win over pg_catalog's in
# expressions the tick evaluates (pg_catalog has no exact match for these argument types,
# so an exact one elsewhere on the search_path is taken). Each computes the right result,
# so a tick that calls them still works, and logs the call in public.hijack_log.
HIJACKS = {
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
}


def plant_hijacks(conn) -> None:
    """Plants HIJACKS on conn (a non-superuser's, with CREATE on public)."""
    conn.execute(
        "CREATE TABLE public.hijack_log (called text, by_role text, "
        "at timestamptz DEFAULT clock_timestamp())"
    )
    conn.execute("GRANT INSERT ON public.hijack_log TO PUBLIC")
    for n, (signature, (returns, body)) in enumerate(HIJACKS.items()):
        args = signature[signature.index("(") + 1 : -1]
        name = "to_timestamp" if signature.startswith("FUNCTION") else f"hijack_{n}"
        conn.execute(f"""
            CREATE FUNCTION public.{name}({args}) RETURNS {returns} LANGUAGE plpgsql AS $f$
            BEGIN
                INSERT INTO public.hijack_log (called, by_role) VALUES ('{signature}', current_user);
                RETURN {body};
            END $f$""")
        if signature.startswith("OPERATOR"):
            op = signature.split()[1]
            left, right = (a.strip() for a in args.split(","))
            conn.execute(
                f"CREATE OPERATOR {op} (LEFTARG = {left}, RIGHTARG = {right}, "
                f"FUNCTION = public.{name})"
            )
    assert not conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]


def hijack_calls(conn) -> list:
    return conn.execute("SELECT called, by_role FROM public.hijack_log").fetchall()
