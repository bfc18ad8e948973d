"""Settings from the environment, each defined once: one row (variable, default, bounds,
help) gives the settings object its field, `from_env` its parsing, `--help` and
docs/settings.md their settings tables (`python -m relay.config > docs/settings.md`, or
`make docs`, writes the page; tests/unit/test_config.py checks the committed one). Every
problem is a one-line ConfigError; no secret is echoed."""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from relay.errors import ConfigError

REGION_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise ConfigError("DATABASE_URL is not set (a libpq URL, e.g. postgresql://user@host/db)")
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must start with postgresql:// or postgres://")
    return url


def sqlalchemy_url(dsn: str) -> str:
    """The same DSN for SQLAlchemy's psycopg 3 dialect (Alembic needs it)."""
    return "postgresql+psycopg://" + dsn.split("://", 1)[1]


# libpq URL parameters whose values are secrets
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def dsn_secrets(dsn: str) -> list[str]:
    """Every password a libpq URL carries (user info or ?password=), as written and decoded."""
    parts = urlsplit(dsn)
    raw = [parts.password] if parts.password else []
    raw += [
        value
        for key, value in parse_qsl(parts.query, keep_blank_values=True, errors="replace")
        if key.lower() in _SECRET_PARAMS and value
    ]
    # parse_qsl decodes; the URL itself may hold the value percent-encoded
    raw += [quote(value, safe="") for value in raw]
    found = []
    for value in raw:
        for form in (value, unquote(value)):
            if form and form not in found:
                found.append(form)
    return found


def redact_url(url: str) -> str:
    """A URL safe to print: passwords (user info and ?password=) are replaced."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True, errors="replace")
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            query = urlencode(
                [(key, "***" if key.lower() in _SECRET_PARAMS else value) for key, value in pairs],
                safe="*",
            )
    return parts._replace(netloc=netloc, query=query).geturl()


def env_suffix(region: str) -> str:
    """Region code → environment suffix: us-east-1 → US_EAST_1."""
    return region.upper().replace("-", "_")


@dataclass(frozen=True)
class Endpoint:
    """One region's Upstash REST endpoint. The token never shows in repr or logs."""

    region: str
    url: str
    token: str = field(repr=False)


def region_endpoint(region: str, env: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if env is None else env
    suffix = env_suffix(region)
    url = env.get(f"UPSTASH_REDIS_REST_URL_{suffix}") or env.get("UPSTASH_REDIS_REST_URL")
    token = env.get(f"UPSTASH_REDIS_REST_TOKEN_{suffix}") or env.get("UPSTASH_REDIS_REST_TOKEN")
    if not url:
        raise ConfigError(
            f"region {region}: set UPSTASH_REDIS_REST_URL_{suffix} (or UPSTASH_REDIS_REST_URL)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"region {region}: UPSTASH_REDIS_REST_URL_{suffix} is not an http(s) URL")
    if not token:
        raise ConfigError(
            f"region {region}: set UPSTASH_REDIS_REST_TOKEN_{suffix} (or UPSTASH_REDIS_REST_TOKEN)"
        )
    return Endpoint(region=region, url=url.rstrip("/"), token=token)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One setting: its environment variable, default, allowed values and meaning."""

    env: str
    default: Any  # the value when unset or empty (None: none)
    help: str  # one sentence; markdown backticks allowed
    kind: str = ""  # int, float, on/off, choice, url, text ("": the default's type)
    lo: float = -math.inf
    hi: float = math.inf
    choices: tuple[str, ...] = ()
    shown: str = ""  # the default as people read it, when not the value itself
    secret: bool = False  # never printed, not even by --help
    derive: Callable[[Any], Any] | None = None  # the default, from the other settings

    @property
    def type(self) -> str:
        if self.kind:
            return self.kind
        return {bool: "on/off", int: "int", float: "float"}.get(type(self.default), "text")

    def parse(self, raw: str | None) -> Any:
        """The value of `raw` (the variable's text, None when unset)."""
        if raw is None or raw.strip() == "":
            return self.default
        raw = raw.strip()
        if self.type in ("int", "float"):
            try:
                value = (int if self.type == "int" else float)(raw)
            except ValueError:
                raise ConfigError(f"{self.env} must be a number, got {raw!r}") from None
            if not self.lo <= value <= self.hi:
                raise ConfigError(
                    f"{self.env} must be between {_number_text(self.lo)} and "
                    f"{_number_text(self.hi)}, got {raw}"
                )
            return value
        if self.type == "on/off":
            if raw.lower() not in ("on", "off"):
                raise ConfigError(f"{self.env} must be on or off, not {raw!r}")
            return raw.lower() == "on"
        if self.type == "choice":
            if raw.lower() not in self.choices:
                raise ConfigError(
                    f"{self.env} must be one of {', '.join(self.choices)}, got {raw!r}"
                )
            return raw.lower()
        if self.type == "url" and urlsplit(raw).scheme not in ("http", "https"):
            raise ConfigError(f"{self.env} must be an http(s) URL")
        return raw

    def value(self, env: Mapping[str, str] | None = None) -> Any:
        env = os.environ if env is None else env
        return self.parse(env.get(self.env))

    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if self.default is None:
            return "—"
        if self.type == "on/off":
            return "on" if self.default else "off"
        return _number_text(self.default) if self.type in ("int", "float") else str(self.default)

    def allowed_text(self) -> str:
        if self.type in ("int", "float") and math.isfinite(self.lo):
            return f"{_number_text(self.lo)} to {_number_text(self.hi)}"
        if self.type in ("on/off", "choice"):
            return " or ".join(self.choices or ("on", "off"))
        return "an http(s) URL" if self.type == "url" else ""


def setting(env: str, default: Any, help: str, **row: Any) -> Any:
    """A settings object's field defined by its row."""
    spec = Setting(env, default, help, **row)
    return field(default=default, repr=not spec.secret, metadata={"setting": spec})


class _Settings:
    """What RelaySettings and OpsSettings share: parsing from the environment, rows,
    defaults derived from other settings."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # each subclass is a dataclass

    def __post_init__(self) -> None:
        for f in fields(self):
            spec = f.metadata["setting"]
            if spec.derive is not None and getattr(self, f.name) is None:
                object.__setattr__(self, f.name, spec.derive(self))

    @classmethod
    def rows(cls) -> list[Setting]:
        return [f.metadata["setting"] for f in fields(cls)]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        return cls(**{f.name: f.metadata["setting"].value(env) for f in fields(cls)})


@dataclass(frozen=True)
class RelaySettings(_Settings):
    """How the relay claims, publishes, retries and breaks circuits."""

    batch_size: int = setting(
        "PGPULSE_BATCH_SIZE", 2000, "jobs per claim and per `/pipeline` request", lo=1, hi=10_000
    )
    concurrency: int = setting(
        "PGPULSE_CONCURRENCY", 4, "batches in flight per region (per relay process)", lo=1, hi=64
    )
    max_attempts: int = setting(
        "PGPULSE_MAX_ATTEMPTS",
        5,
        "publish attempts of one job before it goes to `pgpulse.dead_letters`",
        lo=1,
        hi=100,
    )
    dedup_margin_s: int = setting(
        "PGPULSE_DEDUP_MARGIN_S",
        60,
        "a job's dedup key lives until its `expires_at` plus this (docs/guarantees.md)",
        lo=0,
        hi=3600,
    )
    max_request_bytes: int = setting(
        "PGPULSE_MAX_REQUEST_BYTES",
        1 << 20,
        "one `/pipeline` request's body at most (Upstash refuses over 10 MB)",
        lo=4096,
        hi=10_000_000,
    )
    unclear_push: str = setting(
        "PGPULSE_UNCLEAR_PUSH",
        "wait",
        "a job whose push to a region may have happened (lost "
        "answer, killed relay) when that region goes down: `wait` for the region (never in two "
        "regions' queues), or `reroute` (sooner, possibly in two)",
        kind="choice",
        choices=("wait", "reroute"),
    )
    health_ttl_s: float = setting(
        "PGPULSE_HEALTH_TTL_S",
        30.0,
        "a relay's view of a region's health counts this long "
        "(relays renew theirs every poll interval)",
        lo=1,
        hi=3600,
    )
    claim_lease_s: float = setting(
        "PGPULSE_CLAIM_LEASE_S",
        30.0,
        "a claimed batch must be published within this; past it "
        "PostgreSQL ends the claim's transaction and the jobs go back to other relays",
        lo=1,
        hi=3600,
    )
    publish_timeout_s: float = setting(
        "PGPULSE_PUBLISH_TIMEOUT_S", 5.0, "one HTTP request to Upstash", lo=0.1, hi=120
    )
    retry_window_s: float = setting(
        "PGPULSE_RETRY_WINDOW_S",
        15.0,
        "transport errors, timeouts and 5xx of one batch are retried within this",
        lo=0,
        hi=600,
    )
    breaker_failures: int = setting(
        "PGPULSE_BREAKER_FAILURES",
        5,
        "consecutive failed HTTP attempts to a region (each retry counts) that open its breaker",
        lo=1,
        hi=1000,
    )
    breaker_cooldown_s: float = setting(
        "PGPULSE_BREAKER_COOLDOWN_S", 10.0, "open → half-open probe after this", lo=0.1, hi=3600
    )
    backlog_degraded: int = setting(
        "PGPULSE_BACKLOG_DEGRADED",
        50_000,
        "queue depth above which a region is degraded (round-robin avoids it)",
        lo=1,
        hi=10**9,
    )
    # without NOTIFY a tick's jobs are found by polling: poll often by default
    poll_interval_s: float = setting(
        "PGPULSE_POLL_INTERVAL_S",
        None,
        "fallback wake-up when no NOTIFY arrives",
        kind="float",
        lo=0.05,
        hi=300,
        shown="5 (1 with `PGPULSE_LISTEN=off`)",
        derive=lambda s: 5.0 if s.listen else 1.0,
    )
    # off behind a transaction-mode pooler (PgBouncer, Supavisor): LISTEN never fires
    # there and prepared statements break, so the relay polls and prepares nothing
    listen: bool = setting(
        "PGPULSE_LISTEN",
        True,
        "`off` behind a transaction-mode pooler (PgBouncer, Supavisor): "
        "no LISTEN, polling, no prepared statements",
    )
    pool_size: int = setting(
        "PGPULSE_POOL_SIZE",
        None,
        "most database connections one relay opens",
        kind="int",
        lo=2,
        hi=1000,
        shown="8 × concurrency + 4",
        derive=lambda s: 8 * s.concurrency + 4,
    )
    depth_interval_s: float = setting(
        "PGPULSE_DEPTH_INTERVAL_S", 5.0, "how often queue depth is sampled", lo=0.1, hi=300
    )
    workers_absent_s: float = setting(
        "PGPULSE_WORKERS_ABSENT_S",
        60.0,
        "a region that had worker heartbeats and has none this long, or whose waiting jobs "
        "no worker took this long, is marked workers-absent: its monitors that may fall back "
        "go elsewhere until workers return (keep it above 10 s, a busy worker's heartbeat, "
        "and `PGPULSE_WORKER_IDLE_MAX_S`)",
        lo=1,
        hi=86400,
    )
    results_batch: int = setting(
        "PGPULSE_RESULTS_BATCH",
        2000,
        "check results per batch from a region's results list into PostgreSQL",
        lo=1,
        hi=10_000,
    )
    results_lease_s: float = setting(
        "PGPULSE_RESULTS_LEASE_S",
        30.0,
        "one relay at a time drains a region's results; one that stops answering is taken "
        "over after this",
        lo=1,
        hi=3600,
    )
    clock_skew_warn_s: float = setting(
        "PGPULSE_CLOCK_SKEW_WARN_S",
        2.0,
        "a region's Redis clock (it judges job expiry) or this host's clock this far from "
        "PostgreSQL's is warned about (relay log, `pgpulse doctor`, "
        "`pgpulse_clock_skew_seconds`)",
        lo=0.001,
        hi=3600,
    )


@dataclass(frozen=True)
class OpsSettings(_Settings):
    """Readiness thresholds, alert rules and the HTTP trigger's secret."""

    cron_secret: str | None = setting(
        "CRON_SECRET",
        None,
        "bearer secret of `POST /api/cron/scheduler` (unset: the endpoint answers 503)",
        secret=True,
    )
    ready_max_tick_age_s: float = setting(
        "PGPULSE_READY_MAX_TICK_AGE_S",
        180.0,
        "`/readyz` warns (still 200) when no tick "
        "finished within this: ticks are pg_cron's doing, not this instance's",
        lo=1,
        hi=86400,
    )
    ready_max_backlog_age_s: float = setting(
        "PGPULSE_READY_MAX_BACKLOG_AGE_S",
        120.0,
        "`/readyz`: the oldest due job of a region "
        "this relay delivers to must be younger than this",
        lo=1,
        hi=86400,
    )
    ready_max_facts_age_s: float = setting(
        "PGPULSE_READY_MAX_FACTS_AGE_S",
        30.0,
        "`/readyz`: the cached database facts must be younger than this",
        lo=1,
        hi=86400,
    )
    facts_interval_s: float = setting(
        "PGPULSE_FACTS_INTERVAL_S",
        5.0,
        "how often the one facts loop reads the database for `/readyz` and `/metrics`",
        lo=0.05,
        hi=300,
    )
    http_max_connections: int = setting(
        "PGPULSE_HTTP_MAX_CONNECTIONS",
        256,
        "open HTTP connections (at most half the "
        "descriptors left after 64 for the relay); a new one evicts the one waiting longest for "
        "its request",
        lo=4,
        hi=100_000,
    )
    http_max_requests: int = setting(
        "PGPULSE_HTTP_MAX_REQUESTS",
        16,
        "requests in flight (all but `/healthz`); more are answered 503 at once",
        lo=1,
        hi=10_000,
    )
    http_request_timeout_s: float = setting(
        "PGPULSE_HTTP_REQUEST_TIMEOUT_S",
        10.0,
        "a request must arrive whole within this (else 408 and the connection closes)",
        lo=0.1,
        hi=600,
    )
    # a Slack-style webhook URL is a credential: whoever knows it can post
    alert_webhook_url: str | None = setting(
        "PGPULSE_ALERT_WEBHOOK_URL",
        None,
        "alerts are POSTed here as JSON (and always logged)",
        kind="url",
        secret=True,
    )
    alert_interval_s: float = setting(
        "PGPULSE_ALERT_INTERVAL_S", 10.0, "how often the alert rules run", lo=0.05, hi=3600
    )
    alert_breaker_open_s: float = setting(
        "PGPULSE_ALERT_BREAKER_OPEN_S",
        60.0,
        "a breaker open longer than this alerts",
        lo=0,
        hi=86400,
    )
    alert_deadman_s: float = setting(
        "PGPULSE_ALERT_DEADMAN_S",
        180.0,
        "no finished tick for this long alerts (the dead-man's switch)",
        lo=1,
        hi=86400,
    )
    alert_tick_budget_ratio: float = setting(
        "PGPULSE_ALERT_TICK_BUDGET_RATIO",
        0.8,
        "a tick using more of its budget alerts",
        lo=0.01,
        hi=1,
    )
    alert_backlog_age_s: float = setting(
        "PGPULSE_ALERT_BACKLOG_AGE_S", 120.0, "a due job older than this alerts", lo=0, hi=86400
    )
    alert_vacuum_held_s: float = setting(
        "PGPULSE_ALERT_VACUUM_HELD_S",
        120.0,
        "vacuum of pgpulse's tables held back this long (an open transaction, a replication "
        "slot) alerts",
        lo=1,
        hi=86400,
    )
    alert_database_down_s: float = setting(
        "PGPULSE_ALERT_DATABASE_DOWN_S",
        30.0,
        "the database unreachable this long alerts",
        lo=0,
        hi=86400,
    )
    # the status page's password for other hosts (unset: it answers on localhost only)
    status_secret: str | None = setting(
        "PGPULSE_STATUS_SECRET",
        None,
        "password (HTTP Basic) of the status page for other hosts",
        shown="— (this host only)",
        secret=True,
    )


@dataclass(frozen=True)
class WorkerSettings(_Settings):
    """How a regional worker (`pgpulse worker`) claims, checks and idles."""

    worker_concurrency: int = setting(
        "PGPULSE_WORKER_CONCURRENCY",
        100,
        "`pgpulse worker`: checks running at once (`--concurrency` overrides)",
        lo=1,
        hi=10_000,
    )
    worker_batch: int = setting(
        "PGPULSE_WORKER_BATCH", 100, "`pgpulse worker`: most jobs one claim takes", lo=1, hi=1000
    )
    worker_idle_max_s: float = setting(
        "PGPULSE_WORKER_IDLE_MAX_S",
        3.0,
        "`pgpulse worker`: after an empty claim it waits 0.05 s; idle for 2 s, twice as long "
        "each time, at most this (3 s: at most 28,800 claims a day per idle worker)",
        lo=0.05,
        hi=60,
    )
    worker_lease_margin_s: float = setting(
        "PGPULSE_WORKER_LEASE_MARGIN_S",
        10.0,
        "`pgpulse worker`: a claimed job's lease is its timeout × attempts plus the delays "
        "plus this; then it is claimed again",
        lo=1,
        hi=3600,
    )
    worker_max_runs: int = setting(
        "PGPULSE_WORKER_MAX_RUNS",
        3,
        "`pgpulse worker`: runs of one job (a run ends with an ack or a lapsed lease) before "
        "it is reported failed to run",
        lo=1,
        hi=10,
    )
    allow_private_targets: bool = setting(
        "PGPULSE_ALLOW_PRIVATE_TARGETS",
        False,
        "`pgpulse worker`: `on` lets checks reach loopback, private and link-local addresses "
        "(cloud metadata stays refused)",
    )
    worker_max_body_bytes: int = setting(
        "PGPULSE_WORKER_MAX_BODY_BYTES",
        65_536,
        "`pgpulse worker`: most of a response body a check reads",
        lo=0,
        hi=10_000_000,
    )
    worker_max_redirects: int = setting(
        "PGPULSE_WORKER_MAX_REDIRECTS",
        5,
        "`pgpulse worker`: redirects a check follows (each target checked like the first)",
        lo=0,
        hi=20,
    )
    worker_results_cap: int = setting(
        "PGPULSE_WORKER_RESULTS_CAP",
        100_000,
        "`pgpulse worker`: most results waiting for the relay in a region's results list "
        "(about 600 bytes each); past it the oldest are trimmed and counted "
        "(`pgpulse_results_dropped`), acks never fail; 0 keeps none",
        lo=0,
        hi=10_000_000,
    )
    worker_stats_interval_s: float = setting(
        "PGPULSE_WORKER_STATS_INTERVAL_S",
        10.0,
        "`pgpulse worker`: how often it logs `worker_stats` (checks/s, lag, failing targets)",
        lo=0.1,
        hi=3600,
    )
    worker_metrics: str | None = setting(
        "PGPULSE_WORKER_METRICS",
        None,
        "`pgpulse worker`: `HOST:PORT` to serve Prometheus `/metrics` on (`--metrics` "
        "overrides; port 0: any free one, logged); unset: none",
        shown="— (off)",
    )


# Settings that are command options or read by one module, not part of a settings object.
DATABASE_URL = Setting("DATABASE_URL", None, "libpq URL of the database (every command)")
REGION_URL = Setting(
    "UPSTASH_REDIS_REST_URL_<CODE>",
    None,
    "a region's Upstash REST URL; `<CODE>` is the region code upper-cased, `-` → `_`",
    shown="`UPSTASH_REDIS_REST_URL`",
)
REGION_TOKEN = Setting(
    "UPSTASH_REDIS_REST_TOKEN_<CODE>",
    None,
    "that region's token (a secret: never logged, never stored in the database)",
    shown="`UPSTASH_REDIS_REST_TOKEN`",
    secret=True,
)
CRON_DATABASE = Setting(
    "PGPULSE_CRON_DATABASE",
    None,
    "`pgpulse migrate`: pg_cron's database "
    "when it is not this one (schedules with `cron.schedule_in_database`); "
    "`pgpulse doctor` looks for the job there",
)
LOG_LEVEL = Setting("PGPULSE_LOG_LEVEL", "INFO", "log level of the JSON logs on stderr")
HTTP_LISTEN = Setting("PGPULSE_HTTP", "127.0.0.1:9187", "listen address of `pgpulse http`")
# local tooling
REDIS_URL = Setting(
    "REDIS_URL", "redis://127.0.0.1:6379", "`pgpulse devserver`: the redis-server behind it"
)
DEVSERVER_TOKENS = Setting(
    "PGPULSE_DEVSERVER_TOKENS",
    None,
    "`pgpulse devserver`: "
    "whitespace-separated `TOKEN[=DB]` entries (like `--token`, but not "
    "visible in `ps`)",
    secret=True,
)
DEVSERVER_ADMIN_TOKEN = Setting(
    "PGPULSE_DEVSERVER_ADMIN_TOKEN",
    None,
    "`pgpulse devserver`: token of the fault-injection admin API",
    shown="— (admin API off)",
    secret=True,
)
DEMO_SECONDS = Setting("DEMO_SECONDS", 120.0, "`make demo` / `pgpulse demo`: how long to run")
PG_BINDIR = Setting(
    "PGPULSE_PG_BINDIR",
    None,
    "throwaway clusters: PostgreSQL binaries to use",
    shown="newest with pg_cron",
)
LOCAL_TOOLING = (REDIS_URL, DEVSERVER_TOKENS, DEVSERVER_ADMIN_TOKEN, DEMO_SECONDS, PG_BINDIR)


def setting_groups() -> list[tuple[str, list[Setting]]]:
    """Every setting, under the heading of its part of docs/settings.md."""
    return [
        ("Database and regions (every command)", [DATABASE_URL, REGION_URL, REGION_TOKEN]),
        ("The relay (`pgpulse relay`)", RelaySettings.rows()),
        ("Migrations, logs, the HTTP server's address", [CRON_DATABASE, LOG_LEVEL, HTTP_LISTEN]),
        (
            "The HTTP endpoints, status page and built-in alerts "
            "(`pgpulse relay --http`, `pgpulse http`)",
            OpsSettings.rows(),
        ),
        ("The regional worker (`pgpulse worker`)", WorkerSettings.rows()),
        ("Local tooling (dev server, demo, throwaway clusters)", list(LOCAL_TOOLING)),
    ]


def all_settings() -> list[Setting]:
    """Every setting, in docs/settings.md's order."""
    return [s for _, rows in setting_groups() for s in rows]


def secret_variables() -> list[str]:
    """Variables whose values are secrets (`<CODE>` rows: their common prefix)."""
    return [s.env.split("_<")[0] for s in all_settings() if s.secret]


def markdown_table(rows: Iterable[Setting]) -> str:
    """Settings as a markdown table: variable, default, allowed values, meaning."""
    lines = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for s in rows:
        lines.append(f"| `{s.env}` | {s.default_text()} | {s.allowed_text()} | {s.help} |")
    return "\n".join(lines)


def settings_page() -> str:
    """docs/settings.md: every setting, grouped, and the tick's parameters."""
    # imported here: relay.schedule.tick imports relay.db, which imports this module
    from relay.schedule.tick import TickParams

    parts = [
        "# Settings",
        "<!-- generated from relay/config.py and relay/schedule/tick.py by "
        "`python -m relay.config > docs/settings.md` (or `make docs`): edit those, not this page; "
        "tests/unit/test_config.py fails when the two differ -->",
        "All settings come from the environment; `pgpulse relay --help` (and `pgpulse http "
        "--help`) lists them with their defaults, allowed values and current values. Regions "
        "themselves are rows of `pgpulse.regions` (`pgpulse region ...`, "
        "[operating.md](operating.md#the-command-line)).",
    ]
    for title, rows in setting_groups():
        parts += [f"## {title}", markdown_table(rows)]
    tick = [
        "| argument | `pgpulse tick` option | default | meaning (allowed values) |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(TickParams):
        option = f"`{f.metadata['option']} {f.metadata['metavar']}`"
        default = f"{f.default:,g}" if isinstance(f.default, float) else f"{f.default:,}"
        tick.append(f"| `{f.metadata['argument']}` | {option} | {default} | {f.metadata['help']} |")
    parts += [
        "## Tick parameters",
        "Arguments of the procedure `pgpulse.tick` (and options of `pgpulse tick`; a platform "
        "cron's `POST /api/cron/scheduler` runs the defaults). The procedure refuses anything "
        "else with a one-line error.",
        "\n".join(tick),
    ]
    return "\n\n".join(parts) + "\n"


def help_text(rows: Iterable[Setting], env: Mapping[str, str] | None = None) -> str:
    """`--help`'s list of settings: default, allowed values, the value when set (a secret:
    only that it is set), and the meaning."""
    env = os.environ if env is None else env
    lines = ["environment (default; allowed; current value when set):"]
    for s in rows:
        now = env.get(s.env)
        allowed = s.allowed_text()
        head = f"  {s.env} (default {s.default_text()}" + (f"; {allowed})" if allowed else ")")
        if now:
            head += "  (now set)" if s.secret else f"  (now {now})"
        lines.append(head.replace("`", ""))
        lines += textwrap.wrap(
            s.help.replace("`", ""), 88, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_page(), end="")
