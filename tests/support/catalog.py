"""A database's pgpulse objects as PostgreSQL's catalog has them, for comparing two
databases object by object (a migrated one and one built from sql/): schemas, tables and
other relations, columns, constraints, indexes, triggers, functions' definitions, types,
sequences, views, policies, comments and every grant. Owners are left out (whoever
migrates owns), and so is Alembic's version table."""

from __future__ import annotations

from typing import Any

SCHEMAS = ["pgpulse", "public"]

# each query returns (key, definition) rows; a key names one object
_QUERIES = {
    "schemas": """
        SELECT n.nspname, jsonb_build_object(
                   'acl', ARRAY(SELECT a::text FROM unnest(n.nspacl) a ORDER BY 1),
                   'comment', obj_description(n.oid, 'pg_namespace'))
          FROM pg_namespace n WHERE n.nspname = ANY(%(schemas)s)""",
    "relations": """
        SELECT n.nspname || '.' || c.relname, jsonb_build_object(
                   'kind', c.relkind, 'persistence', c.relpersistence,
                   'options', c.reloptions, 'row_security', c.relrowsecurity,
                   'acl', ARRAY(SELECT a::text FROM unnest(c.relacl) a ORDER BY 1),
                   'comment', obj_description(c.oid, 'pg_class'),
                   'view', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(schemas)s) AND c.relkind NOT IN ('i', 'I')
           AND c.relname <> 'alembic_version'""",
    "columns": """
        SELECT n.nspname || '.' || c.relname || '.' || a.attname, jsonb_build_object(
                   'position', row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                   'type', format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
                   'default', pg_get_expr(d.adbin, d.adrelid), 'identity', a.attidentity,
                   'generated', a.attgenerated, 'collation', a.attcollation::regcollation::text,
                   'acl', ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1),
                   'comment', col_description(c.oid, a.attnum))
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'alembic_version'""",
    "constraints": """
        SELECT n.nspname || '.' || coalesce(c.relname, t.typname) || '.' || k.conname,
               jsonb_build_object('definition', pg_get_constraintdef(k.oid),
                                  'deferrable', k.condeferrable, 'deferred', k.condeferred,
                                  'comment', obj_description(k.oid, 'pg_constraint'))
          FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
          LEFT JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_type t ON t.oid = k.contypid
         WHERE n.nspname = ANY(%(schemas)s) AND coalesce(c.relname, '') <> 'alembic_version'""",
    "indexes": """
        SELECT n.nspname || '.' || c.relname, jsonb_build_object(
                   'definition', pg_get_indexdef(c.oid),
                   'comment', obj_description(c.oid, 'pg_class'))
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(schemas)s) AND t.relname <> 'alembic_version'""",
    "triggers": """
        SELECT n.nspname || '.' || c.relname || '.' || g.tgname, jsonb_build_object(
                   'definition', pg_get_triggerdef(g.oid), 'enabled', g.tgenabled,
                   'comment', obj_description(g.oid, 'pg_trigger'))
          FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%(schemas)s) AND NOT g.tgisinternal""",
    "functions": """
        SELECT p.oid::regprocedure::text, jsonb_build_object(
                   'definition', CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
                   'acl', ARRAY(SELECT a::text FROM unnest(p.proacl) a ORDER BY 1),
                   'comment', obj_description(p.oid, 'pg_proc'))
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = ANY(%(schemas)s)""",
    "types": """
        SELECT t.oid::regtype::text, jsonb_build_object(
                   'kind', t.typtype, 'base', format_type(t.typbasetype, t.typtypmod),
                   'not_null', t.typnotnull, 'default', t.typdefault,
                   'labels', ARRAY(SELECT e.enumlabel::text FROM pg_enum e
                                    WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
                   'acl', ARRAY(SELECT a::text FROM unnest(t.typacl) a ORDER BY 1),
                   'comment', obj_description(t.oid, 'pg_type'))
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = ANY(%(schemas)s) AND t.typtype IN ('e', 'd', 'r', 'm')""",
    "sequences": """
        SELECT s.seqrelid::regclass::text, jsonb_build_object(
                   'type', format_type(s.seqtypid, NULL), 'start', s.seqstart,
                   'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
                   'cache', s.seqcache, 'cycle', s.seqcycle)
          FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(schemas)s)""",
    "policies": """
        SELECT n.nspname || '.' || c.relname || '.' || p.polname, jsonb_build_object(
                   'command', p.polcmd, 'permissive', p.polpermissive,
                   'roles', ARRAY(SELECT r::regrole::text FROM unnest(p.polroles) r ORDER BY 1),
                   'using', pg_get_expr(p.polqual, p.polrelid),
                   'check', pg_get_expr(p.polwithcheck, p.polrelid))
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(schemas)s)""",
    "default_privileges": """
        SELECT d.defaclrole::regrole::text || ' in ' || coalesce(n.nspname, '*') || ' on '
               || d.defaclobjtype::text, to_jsonb(ARRAY(SELECT a::text FROM unnest(d.defaclacl) a
                                                  ORDER BY 1))
          FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
         WHERE n.nspname IS NULL OR n.nspname = ANY(%(schemas)s)""",
}

CRON_JOBS = """
    SELECT jobname, jsonb_build_object('schedule', schedule, 'command', command,
                                       'database', database, 'username', username,
                                       'active', active)
      FROM cron.job WHERE database = current_database() ORDER BY jobname"""


def catalog(conn) -> dict[str, dict[str, Any]]:
    """{kind: {object: definition}} of conn's database."""
    return {
        kind: dict(conn.execute(query, {"schemas": SCHEMAS}).fetchall())
        for kind, query in _QUERIES.items()
    }


def cron_job_rows(conn) -> dict[str, Any]:
    """This database's pg_cron jobs, by name (conn: pg_cron's database)."""
    return dict(conn.execute(CRON_JOBS).fetchall())


def differences(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """What differs between two catalogs, one line per object: only in a, only in b, or
    the fields that differ."""
    found = []
    for kind in sorted(a.keys() | b.keys()):
        left, right = a.get(kind, {}), b.get(kind, {})
        for key in sorted(left.keys() | right.keys()):
            if key not in right:
                found.append(f"{kind} {key}: only in the first")
            elif key not in left:
                found.append(f"{kind} {key}: only in the second")
            elif left[key] != right[key]:
                fields = (
                    sorted(
                        f
                        for f in left[key].keys() | right[key].keys()
                        if left[key].get(f) != right[key].get(f)
                    )
                    if isinstance(left[key], dict) and isinstance(right[key], dict)
                    else ["value"]
                )
                found.append(f"{kind} {key}: {', '.join(fields)} differ")
    return found
