"""The `pgpulse` command. One top-level handler turns every pgpulse error into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from relay import extras
from relay.errors import PgPulseError, UserInputError

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

    if args.sql:
        print(migrate.upgrade_sql(args.revision, args.start), end="")
    elif args.downgrade:
        migrate.downgrade(_dsn(args), args.downgrade, args.cron_database, force=args.force)
        print(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(_dsn(args), args.revision, args.cron_database)
        if not args.cron_database and not migrate.pg_cron_here(_dsn(args)):
            admin = "\n".join(
                f"  {s.as_string(None)}"
                for s in migrate.cron_statements(migrate.database_name(_dsn(args)))
            )
            print(
                "pgpulse: if pg_cron runs in another database (RDS, Cloud SQL: postgres), "
                "run `pgpulse migrate --cron-database NAME`, or have an admin run there:\n" + admin,
                file=sys.stderr,
            )
        print(f"upgraded to {args.revision}")


@command("tick")
def _tick(args):
    from relay.schedule.tick import TickParams, run_tick

    record = run_tick(_dsn(args), TickParams.from_options(args), trigger=args.trigger)
    emit(
        args,
        record,
        lambda r: (
            f"tick {r['id']}: {r['monitors_claimed']} monitors, {r['jobs_written']} jobs, "
            f"{r['chunks']} chunks, {r['duration_ms']} ms"
            + (", cut short by the budget" if r["cut_short"] else "")
            + (f", {r['unrouted']} due monitors no region could take" if r["unrouted"] else "")
        ),
    )


@command("relay")
def _relay(args):
    import asyncio

    from relay import logs
    from relay.delivery.service import Relay
    from relay.migrate import check_schema

    dsn = _dsn(args)
    check_schema(dsn)  # a relay of another release refuses this schema, in one line
    logs.setup(args.log_level)
    relay = Relay(dsn, once=args.once)
    if args.http:
        from relay.ops.http import serve_alongside

        counts = asyncio.run(serve_alongside(relay, args.http, dsn))
    elif args.once:
        counts = asyncio.run(relay.run())
    else:
        from relay.ops.alerts import run_with_alerts

        counts = asyncio.run(run_with_alerts(relay, dsn))
    if args.once:
        emit(
            args,
            dict(vars(counts)),
            lambda c: (
                f"published {c['published']}, expired {c['expired']}, failed {c['failed']}, "
                f"rerouted {c['rerouted']}, dead-lettered {c['dead_lettered']}"
            ),
        )
        if relay.undelivered:  # cron wrappers rely on the exit code
            from relay.errors import Undeliverable

            raise Undeliverable(relay.undelivered)


@command("worker")
def _worker(args):
    import asyncio

    from relay import logs
    from relay.config import REGION_CODE, WorkerSettings, region_endpoint
    from relay.worker.metrics import parse_listen
    from relay.worker.runner import RegionalWorker

    if not REGION_CODE.match(args.region):
        raise UserInputError(f"--region {args.region!r} is not a region code (e.g. us-east-1)")
    if args.concurrency is not None and not 1 <= args.concurrency <= 10_000:
        raise UserInputError(f"--concurrency must be 1-10000, got {args.concurrency}")
    settings = WorkerSettings.from_env()
    metrics_at = args.metrics or settings.worker_metrics
    if metrics_at:
        try:
            parse_listen(metrics_at)
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
    logs.setup(args.log_level)
    worker = RegionalWorker(
        region_endpoint(args.region),
        settings,
        concurrency=args.concurrency,
        metrics_at=metrics_at,
    )
    asyncio.run(worker.run(signals=True))


@command("status")
def _status(args):
    from relay.db import connect
    from relay.ops import status

    with connect(_dsn(args)) as conn:
        emit(args, status.snapshot(conn), status.render)


@command("resync")
def _resync(args):
    from relay.db import connect
    from relay.queries import queries

    with connect(_dsn(args)) as conn:
        found = conn.execute(queries()["resync"], {"dry_run": args.dry_run}).fetchone()
    done = "would repair" if args.dry_run else "repaired"
    emit(
        args,
        dict(found) | {"dry_run": args.dry_run},
        lambda r: (
            f"public.monitors {r['product_rows']} rows, pgpulse.schedule {r['schedule_rows']}: "
            + (
                f"{done} {r['missing']} missing, {r['orphaned']} orphaned, "
                f"{r['differing']} differing"
                if r["missing"] or r["orphaned"] or r["differing"]
                else "in step"
            )
        ),
    )


@command("dlq")
def _dlq(args):
    from relay.db import connect
    from relay.schedule import admin

    with connect(_dsn(args)) as conn:
        if args.action == "list":
            emit(
                args,
                admin.dlq_list(conn, args.limit),
                lambda rows: (
                    "\n".join(
                        f"{r['job_id']} {r['region']:<12} attempts {r['attempts']} {r['failed_at']} "
                        f"{r['last_error']}"
                        for r in rows
                    )
                    or "no dead letters"
                ),
            )
        elif args.action == "retry":
            emit(
                args,
                admin.dlq_retry(conn, args.job_id),
                lambda r: (
                    f"moved {r['retried']} job(s) back to the outbox"
                    + (
                        f"; kept {r['kept']} dead letter(s) whose slot is in the outbox already"
                        if r["kept"]
                        else ""
                    )
                ),
            )
        else:
            n = admin.dlq_purge(conn, args.job_id)
            emit(args, {"purged": n}, lambda r: f"deleted {r['purged']} dead letter(s)")


@command("region")
def _region(args):
    from relay.db import connect
    from relay.schedule import admin

    with connect(_dsn(args)) as conn:
        if args.action == "list":
            emit(
                args,
                admin.region_list(conn),
                lambda rows: (
                    "\n".join(
                        f"{r['code']:<16} {'enabled' if r['enabled'] else 'DISABLED':<9}"
                        f"{'healthy' if r['healthy'] else 'UNHEALTHY':<10}"
                        f"{'default ' if r['is_default'] else ''}fallback={r['fallback_region'] or '-'} "
                        f"weight={r['weight']} waiting={r['waiting']}"
                        for r in rows
                    )
                    or "no regions"
                ),
            )
            return
        if args.action == "add":
            admin.region_add(
                conn,
                args.code,
                enabled=not args.disabled,
                fallback=args.fallback,
                weight=args.weight,
            )
        elif args.action in ("enable", "disable"):
            admin.region_enable(conn, args.code, args.action == "enable")
        elif args.action == "set-default":
            admin.region_set_default(conn, args.code)
        print(f"region {args.code}: {args.action} done")


@command("doctor")
def _doctor(args):
    from relay.ops import doctor

    checks = doctor.run(dsn=args.database_url)
    emit(args, doctor.as_json(checks), lambda r: "\n".join(doctor.render(checks)))
    return 1 if any(c.verdict == "FAIL" for c in checks) else 0


@command("maintenance")
def _maintenance(args):
    from relay.db import connect
    from relay.schedule import maintenance

    with connect(_dsn(args)) as conn:
        if args.action == "list":
            emit(
                args,
                maintenance.list_windows(conn),
                lambda rows: (
                    "\n".join(maintenance.describe(w) for w in rows) or "no maintenance windows"
                ),
            )
        elif args.action == "add":
            window_id = maintenance.add(
                conn,
                time_zone=args.tz,
                name=args.name,
                monitors=args.monitor,
                starts=args.starts,
                ends=args.ends,
                weekly=args.weekly,
                at=args.at,
                duration=args.duration,
            )
            emit(args, {"id": window_id}, lambda r: f"maintenance window {r['id']} added")
        else:
            if args.id is None:
                raise UserInputError("maintenance remove: a window id is required")
            maintenance.remove(conn, args.id)
            print(f"maintenance window {args.id} removed")


def protect_secrets(dsn: str | None = None) -> None:
    """Registers every configured secret with the redactor (logs and CLI errors)."""
    from relay import logs
    from relay.config import dsn_secrets, secret_variables

    prefixes = ("PGPASSWORD", *secret_variables())  # a <CODE> row is its prefix
    for name, value in os.environ.items():
        if name.startswith(prefixes):
            for secret in [value, *value.split()]:
                logs.register_secret(secret)
    for url in (dsn, os.environ.get("DATABASE_URL")):
        for secret in dsn_secrets(url or ""):
            logs.register_secret(secret)


@command("http")
def _http(args):
    import asyncio

    from relay import logs
    from relay.ops.http import serve_alone

    dsn = _dsn(args)
    logs.setup(args.log_level)
    asyncio.run(serve_alone(args.listen, dsn))


@command("demo")
def _demo(args):
    from relay.local.demo import run_demo

    run_demo(seconds=args.seconds, monitors=args.monitors)


@command("bench")
def _bench(args):
    from relay.bench import run_bench, summary

    for record in run_bench(args):
        emit(args, record, summary)


@command("devserver")
def _devserver(args):
    from relay.devserver.server import run

    run(args)


# ------------------------------------------------------------------ parser


def _env_default(setting) -> Any:
    """An option's default from its setting's variable (text: argparse converts it with the
    option's type, so a bad value is a usage error)."""
    return os.environ.get(setting.env) or setting.default


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the settings epilog kept as written."""


def build_parser() -> argparse.ArgumentParser:
    from relay import config
    from relay.schedule.tick import TickParams

    fmt = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="pgpulse",
        formatter_class=fmt,
        description="Schedule uptime checks inside PostgreSQL and relay them to regional "
        "Upstash Redis queues.",
    )
    parser.add_argument("--version", action="version", version=f"pgpulse {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        p.add_argument(
            "--database-url", default=None, help="libpq URL of the database (env $DATABASE_URL)"
        )
        return p

    p = add("migrate", "upgrade the database schema to the newest revision (Alembic)")
    p.add_argument("--revision", default="head", help="revision to upgrade to")
    p.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --downgrade: drop tables and columns that hold rows or set values "
        "(without it such a downgrade refuses and names them)",
    )
    p.add_argument(
        "--sql",
        action="store_true",
        help="print the upgrade's SQL for a DBA instead of running it (no connection)",
    )
    p.add_argument(
        "--cron-database",
        metavar="NAME",
        default=_env_default(config.CRON_DATABASE),
        help="pg_cron's database when it is not this one (RDS, Cloud SQL: postgres): "
        "schedule the tick from there (env $PGPULSE_CRON_DATABASE)",
    )
    p.add_argument(
        "--from",
        dest="start",
        metavar="REVISION",
        help="with --sql: the revision the database is at (default: an empty database)",
    )

    p = add("tick", "run one scheduler tick now and print its record")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    TickParams.add_options(p)
    p.add_argument("--trigger", default="cli", help="recorded in tick_runs.trigger")

    p = add("relay", "drain the outbox to the regional Upstash queues (until SIGTERM)")
    p.epilog = config.help_text(
        [
            config.REGION_URL,
            config.REGION_TOKEN,
            *config.RelaySettings.rows(),
            *config.OpsSettings.rows(),
        ]
    )
    p.add_argument("--once", action="store_true", help="deliver everything due now, then exit")
    p.add_argument("--json", action="store_true", help="with --once: print totals as JSON")
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve /healthz, /readyz, /metrics and /api/cron/scheduler",
    )
    p.add_argument(
        "--log-level",
        default=_env_default(config.LOG_LEVEL),
        help="log level (env $PGPULSE_LOG_LEVEL)",
    )

    p = sub.add_parser(
        "worker",
        formatter_class=fmt,
        help="run a region's checks from its queue (until SIGTERM)",
        description="The reference regional worker: claims jobs from one region's Upstash "
        "queues (docs/queue-contract.md, version 2), runs each check SSRF-safe, acknowledges "
        "them. Needs no database.",
    )
    p.epilog = config.help_text(
        [config.REGION_URL, config.REGION_TOKEN, *config.WorkerSettings.rows()]
    )
    p.add_argument("--region", required=True, metavar="CODE", help="the region to work for")
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="checks at once (default: $PGPULSE_WORKER_CONCURRENCY, 100)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=None,
        help="serve Prometheus /metrics (and /healthz) here (default: $PGPULSE_WORKER_METRICS, "
        "unset: off)",
    )
    p.add_argument(
        "--log-level",
        default=_env_default(config.LOG_LEVEL),
        help="log level (env $PGPULSE_LOG_LEVEL)",
    )

    p = add("status", "backlog, dead letters, recent ticks, pg_cron and region health")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add(
        "resync",
        "bring pgpulse's schedule in step with public.monitors after following stopped "
        "(DISABLE TRIGGER, replica mode, a restore): run as a role that sees every row",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="say what it would repair, change nothing"
    )
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add("doctor", "check the install: database, rights, pg_cron, regions, clock, settings")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")

    p = add("dlq", "list, retry or purge dead-lettered jobs")
    p.add_argument("action", choices=["list", "retry", "purge"])
    p.add_argument("job_id", nargs="?", help="one job (retry/purge); default: all")
    p.add_argument("--limit", type=int, default=50, help="list at most this many")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add("region", "list or change regions (endpoints come from the environment)")
    p.add_argument("action", choices=["list", "add", "enable", "disable", "set-default"])
    p.add_argument("code", nargs="?", help="region code, e.g. us-east-1")
    p.add_argument("--fallback", help="add: fallback region while this one is down")
    p.add_argument("--weight", type=int, default=1, help="add: round-robin weight")
    p.add_argument("--disabled", action="store_true", help="add: start disabled")
    p.add_argument("--json", action="store_true", help="list: print as JSON")

    p = add("maintenance", "list, add or remove maintenance windows (slots inside are skipped)")
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("id", nargs="?", type=int, help="remove: the window's id")
    p.add_argument("--tz", default="UTC", help="add: IANA time zone of the times given")
    p.add_argument("--name", default="", help="add: a label")
    p.add_argument(
        "--monitor",
        action="append",
        metavar="UUID",
        help="add: a monitor it applies to (repeatable; default: all monitors)",
    )
    p.add_argument(
        "--from", dest="starts", metavar="'YYYY-MM-DD HH:MM'", help="add, once: local start"
    )
    p.add_argument("--to", dest="ends", metavar="'YYYY-MM-DD HH:MM'", help="add, once: local end")
    p.add_argument("--weekly", metavar="DAYS", help="add, weekly: days, e.g. sat,sun")
    p.add_argument("--at", metavar="HH:MM", help="add, weekly: local start time")
    p.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="add, weekly: how long, e.g. '2 hours' (wall clock)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add("http", "serve /healthz, /readyz, /metrics and /api/cron/scheduler without a relay")
    p.epilog = config.help_text(config.OpsSettings.rows())
    p.add_argument(
        "--listen",
        default=_env_default(config.HTTP_LISTEN),
        metavar="HOST:PORT",
        help="address to listen on (env $PGPULSE_HTTP)",
    )
    p.add_argument(
        "--log-level",
        default=_env_default(config.LOG_LEVEL),
        help="log level (env $PGPULSE_LOG_LEVEL)",
    )

    p = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="run the whole system live on throwaway local services",
        description="PostgreSQL with pg_cron, redis-server, the Upstash dev "
        "server, 10,000 monitors, the relay and a worker per region checking local targets; "
        "everything is removed at the end.",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=_env_default(config.DEMO_SECONDS),
        help="how long to run (env $DEMO_SECONDS)",
    )
    p.add_argument("--monitors", type=int, default=10_000, help="monitors to create")

    p = sub.add_parser(
        "bench",
        formatter_class=fmt,
        help="benchmarks on throwaway local services (figures in docs/benchmarks.md)",
        description="Each benchmark starts its own PostgreSQL, redis-server and "
        "dev server. Medians of several runs.",
    )
    p.add_argument(
        "what",
        choices=[
            "tick",
            "follow",
            "devserver",
            "relay",
            "relay-lag",
            "compare",
            "e2e",
            "first-check",
            "worker-lag",
            "worker",
            "soak",
            "results",
            "all",
        ],
    )
    p.add_argument(
        "--monitors",
        type=int,
        default=None,
        help="tick/follow/e2e/compare/first-check: monitors or rows "
        "(default 100000 / 100000 / 100000 / 1000 / 100000)",
    )
    p.add_argument(
        "--mix",
        action="store_true",
        help="tick: 10%% of the monitors sub-minute, 10%% checked from three regions",
    )
    p.add_argument("--jobs", type=int, default=100_000, help="relay: jobs in the outbox")
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="relay/compare: latency the dev server adds to every request",
    )
    p.add_argument(
        "--rate", type=float, default=2000.0, help="relay-lag/soak: jobs falling due per second"
    )
    p.add_argument(
        "--minutes", type=int, default=10, help="soak: minutes measured (after two ticks)"
    )
    p.add_argument(
        "--hold-open-at",
        type=int,
        default=None,
        metavar="MIN",
        help="soak: a product transaction opens after minute MIN (vacuum held back)",
    )
    p.add_argument(
        "--hold-open-minutes",
        type=int,
        default=5,
        help="soak: how long that transaction stays open",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="soak: where soak.json, soak.txt, soak.png and the relay's log go "
        "(default ./soak-<time>)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="relay-lag / worker-lag: how long jobs fall due (default 30 / 60)",
    )
    p.add_argument(
        "--rate-per-min",
        type=float,
        default=10_000.0,
        help="worker-lag: checks falling due per minute, over three regions",
    )
    p.add_argument(
        "--checks",
        type=int,
        default=20_000,
        help="worker / worker-lag: checks one worker runs flat out",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=60.0,
        help="worker / worker-lag: how long the idle worker is watched",
    )
    p.add_argument(
        "--interval",
        type=int,
        default=None,
        metavar="SECONDS",
        help="relay-lag: the jobs are slots of monitors checked every SECONDS "
        "(10 to 86400), written by the real tick",
    )
    p.add_argument(
        "--results",
        type=int,
        default=200_000,
        help="results: check results drained into PostgreSQL per run",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--json", action="store_true", help="print JSON only")

    from relay.devserver import options as devserver_options

    p = sub.add_parser(
        "devserver",
        formatter_class=fmt,
        help="an Upstash-compatible REST server on a real redis-server",
        description=devserver_options.DESCRIPTION,
    )
    devserver_options.add_arguments(p)
    return parser


def _version() -> str:
    from relay import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "region" and args.action != "list" and not args.code:
        parser.error(f"region {args.action}: a region code is required")
    protect_secrets(getattr(args, "database_url", None))
    try:
        extras.require(args.command)
        return COMMANDS[args.command](args) or 0
    except extras.MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        missing = extras.explain(args.command, exc)
        if missing is None:
            raise
        print(missing, file=sys.stderr)
        return 1
    except PgPulseError as exc:
        from relay.logs import redact

        print(f"pgpulse {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
