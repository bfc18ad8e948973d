"""The `pgpulse` command. One top-level handler turns every pgpulse error into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from relay.errors import PgPulseError

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def emit(args: argparse.Namespace, record: Any, text: Callable[[Any], str]) -> None:
    """JSON for scripts (--json), a short human form otherwise."""
    if getattr(args, "json", False):
        print(json.dumps(record, default=str, indent=None if isinstance(record, list) else 2))
    else:
        print(text(record))


def _dsn(args: argparse.Namespace) -> str:
    from relay.config import database_url
    return database_url({"DATABASE_URL": args.database_url} if args.database_url else None)


# ------------------------------------------------------------------ commands

@command("migrate")
def _migrate(args):
    from relay import migrate
    if args.downgrade:
        migrate.downgrade(_dsn(args), args.downgrade)
        print(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(_dsn(args), args.revision)
        print(f"upgraded to {args.revision}")


@command("tick")
def _tick(args):
    from relay.tick import run_tick
    record = run_tick(_dsn(args), trigger=args.trigger, budget_s=args.budget,
                      lookahead_s=args.lookahead, chunk=args.chunk)
    emit(args, record, lambda r: (
        f"tick {r['id']}: {r['monitors_claimed']} monitors, {r['jobs_written']} jobs, "
        f"{r['chunks']} chunks, {r['duration_ms']} ms"
        + (", cut short by the budget" if r["cut_short"] else "")
        + (f", {r['unrouted']} unrouted (no enabled region)" if r["unrouted"] else "")))


@command("devserver")
def _devserver(args):
    from relay import devserver
    tokens = devserver.parse_token_args(args.token)
    devserver.serve(args.host, args.port, args.redis_url, tokens, args.admin_token)


# ------------------------------------------------------------------ parser

def _env_default(name: str, fallback: Any = None) -> Any:
    return os.environ.get(name, fallback)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pgpulse", formatter_class=fmt,
        description="Schedule uptime checks inside PostgreSQL and relay them to regional "
                    "Upstash Redis queues.")
    parser.add_argument("--version", action="version", version=f"pgpulse {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=fmt)
        p.add_argument("--database-url", default=None,
                       help="libpq URL of the database (default: $DATABASE_URL)")
        return p

    p = add("migrate", "upgrade the database schema to the newest revision (Alembic)")
    p.add_argument("--revision", default="head", help="revision to upgrade to")
    p.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")

    p = add("tick", "run one scheduler tick now and print its record")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--budget", type=float, default=45.0, help="time budget in seconds")
    p.add_argument("--lookahead", type=float, default=60.0,
                   help="emit jobs due within this many seconds")
    p.add_argument("--chunk", type=int, default=5000, help="monitors claimed per transaction")
    p.add_argument("--trigger", default="cli", help="recorded in tick_runs.trigger")

    p = sub.add_parser("devserver", formatter_class=fmt,
                       help="an Upstash-compatible REST server on a real redis-server",
                       description="Serve Upstash's Redis REST API on top of a redis-server. "
                                   "Each --token TOKEN[=DB] maps a bearer token to a database.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8079)
    p.add_argument("--redis-url", default=_env_default("REDIS_URL", "redis://127.0.0.1:6379"),
                   help="redis-server to run commands on (default: $REDIS_URL)")
    p.add_argument("--token", action="append", required=True, metavar="TOKEN[=DB]",
                   help="accepted bearer token and its Redis database number (repeatable)")
    p.add_argument("--admin-token", default=_env_default("PGPULSE_DEVSERVER_ADMIN_TOKEN"),
                   help="token of the fault-injection admin API (default: "
                        "$PGPULSE_DEVSERVER_ADMIN_TOKEN; unset: admin API off)")
    return parser


def _version() -> str:
    from relay import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except PgPulseError as exc:
        print(f"pgpulse {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
