"""Settings from the environment. Every problem is a one-line ConfigError; no secret is echoed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from relay.errors import ConfigError

REGION_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def database_url(env: dict[str, str] | None = None) -> str:
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
    raw += [value for key, value in parse_qsl(parts.query, keep_blank_values=True,
                                                 errors="replace")
            if key.lower() in _SECRET_PARAMS and value]
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
            query = urlencode([(key, "***" if key.lower() in _SECRET_PARAMS else value)
                               for key, value in pairs], safe="*")
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


def region_endpoint(region: str, env: dict[str, str] | None = None) -> Endpoint:
    env = os.environ if env is None else env
    suffix = env_suffix(region)
    url = env.get(f"UPSTASH_REDIS_REST_URL_{suffix}") or env.get("UPSTASH_REDIS_REST_URL")
    token = env.get(f"UPSTASH_REDIS_REST_TOKEN_{suffix}") or env.get("UPSTASH_REDIS_REST_TOKEN")
    if not url:
        raise ConfigError(
            f"region {region}: set UPSTASH_REDIS_REST_URL_{suffix} (or UPSTASH_REDIS_REST_URL)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"region {region}: UPSTASH_REDIS_REST_URL_{suffix} is not an http(s) URL")
    if not token:
        raise ConfigError(
            f"region {region}: set UPSTASH_REDIS_REST_TOKEN_{suffix} (or UPSTASH_REDIS_REST_TOKEN)")
    return Endpoint(region=region, url=url.rstrip("/"), token=token)


def _number(env: dict[str, str], name: str, default: float, lo: float, hi: float, kind=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {raw}")
    return value


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or default).strip().lower()
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {env.get(name)!r}")
    return raw


@dataclass(frozen=True)
class RelaySettings:
    """How the relay claims, publishes, retries and breaks circuits."""

    batch_size: int = 1000            # jobs per claim and per /pipeline request
    concurrency: int = 4              # batches in flight per region
    max_attempts: int = 5             # publish attempts per job before the dead-letter table
    dedup_margin_s: int = 60          # a dedup key outlives its job's expires_at by this
    max_request_bytes: int = 1 << 20  # one /pipeline request's body at most (Upstash: 10 MB)
    claim_lease_s: float = 30.0       # a claim's transaction may publish this long at most
    unclear_push: str = "wait"        # a job maybe pushed to a region now down: wait|reroute
    health_ttl_s: float = 30.0        # a relay's view of a region counts this long
    publish_timeout_s: float = 5.0    # one HTTP request
    retry_window_s: float = 15.0      # retries of one batch stop after this
    breaker_failures: int = 5         # consecutive failed batches that open the breaker
    breaker_cooldown_s: float = 10.0  # open → half-open probe after this
    backlog_degraded: int = 50_000    # queue depth above which a region counts as degraded
    poll_interval_s: float = 5.0      # fallback wake-up when no NOTIFY arrives
    depth_interval_s: float = 5.0     # how often queue depth is sampled
    # off behind a transaction-mode pooler (PgBouncer, Supavisor): LISTEN never fires
    # there and prepared statements break, so the relay polls and prepares nothing
    listen: bool = True
    pool_size: int = 36               # most database connections the relay opens

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "RelaySettings":
        env = os.environ if env is None else env
        listen = env.get("PGPULSE_LISTEN", "on").strip().lower()
        if listen not in ("on", "off"):
            raise ConfigError(f"PGPULSE_LISTEN must be on or off, not {listen!r}")
        concurrency = _number(env, "PGPULSE_CONCURRENCY", 4, 1, 64, int)
        return cls(
            listen=listen == "on",
            # without NOTIFY a tick's jobs are found by polling: poll often by default
            pool_size=_number(env, "PGPULSE_POOL_SIZE", 8 * concurrency + 4, 2, 1000, int),
            batch_size=_number(env, "PGPULSE_BATCH_SIZE", 1000, 1, 10_000, int),
            concurrency=concurrency,
            max_attempts=_number(env, "PGPULSE_MAX_ATTEMPTS", 5, 1, 100, int),
            dedup_margin_s=_number(env, "PGPULSE_DEDUP_MARGIN_S", 60, 0, 3600, int),
            max_request_bytes=_number(env, "PGPULSE_MAX_REQUEST_BYTES", 1 << 20, 4096,
                                      10_000_000, int),
            claim_lease_s=_number(env, "PGPULSE_CLAIM_LEASE_S", 30.0, 1.0, 3600),
            unclear_push=_choice(env, "PGPULSE_UNCLEAR_PUSH", "wait", ("wait", "reroute")),
            health_ttl_s=_number(env, "PGPULSE_HEALTH_TTL_S", 30.0, 1.0, 3600),
            publish_timeout_s=_number(env, "PGPULSE_PUBLISH_TIMEOUT_S", 5.0, 0.1, 120),
            retry_window_s=_number(env, "PGPULSE_RETRY_WINDOW_S", 15.0, 0, 600),
            breaker_failures=_number(env, "PGPULSE_BREAKER_FAILURES", 5, 1, 1000, int),
            breaker_cooldown_s=_number(env, "PGPULSE_BREAKER_COOLDOWN_S", 10.0, 0.1, 3600),
            backlog_degraded=_number(env, "PGPULSE_BACKLOG_DEGRADED", 50_000, 1, 10**9, int),
            poll_interval_s=_number(env, "PGPULSE_POLL_INTERVAL_S", 5.0 if listen == "on" else 1.0,
                                    0.05, 300),
            depth_interval_s=_number(env, "PGPULSE_DEPTH_INTERVAL_S", 5.0, 0.1, 300),
        )


@dataclass(frozen=True)
class OpsSettings:
    """Readiness thresholds, alert rules and the HTTP trigger's secret."""

    # secret fields (metadata "secret") are never printed, not even by --help
    cron_secret: str | None = field(default=None, repr=False, metadata={"secret": True})
    ready_max_tick_age_s: float = 180.0     # /readyz: a tick finished within this
    ready_max_backlog_age_s: float = 120.0  # /readyz: oldest due job younger than this
    ready_max_facts_age_s: float = 30.0     # /readyz: database facts read within this
    facts_interval_s: float = 5.0           # how often the one facts loop reads the database
    http_max_connections: int = 256         # open HTTP connections; the oldest idle one goes
    http_max_requests: int = 16             # requests in flight (but /healthz); more get 503
    http_request_timeout_s: float = 10.0    # to send a whole request (slowloris)
    # a Slack-style webhook URL is a credential: whoever knows it can post
    alert_webhook_url: str | None = field(default=None, repr=False, metadata={"secret": True})
    alert_interval_s: float = 10.0          # how often alert rules are evaluated
    # the status page's password for other hosts (unset: it answers on localhost only)
    status_secret: str | None = field(default=None, repr=False, metadata={"secret": True})
    alert_breaker_open_s: float = 60.0      # a breaker open longer than this alerts
    alert_deadman_s: float = 180.0          # no finished tick for this long alerts
    alert_tick_budget_ratio: float = 0.8    # a tick using more of its budget alerts
    alert_backlog_age_s: float = 120.0      # oldest due job older than this alerts
    alert_database_down_s: float = 30.0     # the database unreachable this long alerts

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "OpsSettings":
        env = os.environ if env is None else env
        webhook = env.get("PGPULSE_ALERT_WEBHOOK_URL") or None
        if webhook and urlsplit(webhook).scheme not in ("http", "https"):
            raise ConfigError("PGPULSE_ALERT_WEBHOOK_URL must be an http(s) URL")
        return cls(
            cron_secret=env.get("CRON_SECRET") or None,
            ready_max_tick_age_s=_number(env, "PGPULSE_READY_MAX_TICK_AGE_S", 180, 1, 86400),
            ready_max_backlog_age_s=_number(env, "PGPULSE_READY_MAX_BACKLOG_AGE_S", 120, 1, 86400),
            ready_max_facts_age_s=_number(env, "PGPULSE_READY_MAX_FACTS_AGE_S", 30, 1, 86400),
            facts_interval_s=_number(env, "PGPULSE_FACTS_INTERVAL_S", 5, 0.05, 300),
            http_max_connections=_number(env, "PGPULSE_HTTP_MAX_CONNECTIONS", 256, 4, 100_000, int),
            http_max_requests=_number(env, "PGPULSE_HTTP_MAX_REQUESTS", 16, 1, 10_000, int),
            http_request_timeout_s=_number(env, "PGPULSE_HTTP_REQUEST_TIMEOUT_S", 10, 0.1, 600),
            alert_webhook_url=webhook,
            status_secret=env.get("PGPULSE_STATUS_SECRET") or None,
            alert_interval_s=_number(env, "PGPULSE_ALERT_INTERVAL_S", 10, 0.05, 3600),
            alert_breaker_open_s=_number(env, "PGPULSE_ALERT_BREAKER_OPEN_S", 60, 0, 86400),
            alert_deadman_s=_number(env, "PGPULSE_ALERT_DEADMAN_S", 180, 1, 86400),
            alert_tick_budget_ratio=_number(env, "PGPULSE_ALERT_TICK_BUDGET_RATIO", 0.8, 0.01, 1),
            alert_backlog_age_s=_number(env, "PGPULSE_ALERT_BACKLOG_AGE_S", 120, 0, 86400),
            alert_database_down_s=_number(env, "PGPULSE_ALERT_DATABASE_DOWN_S", 30, 0, 86400),
        )
