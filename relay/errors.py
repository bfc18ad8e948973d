"""Every error pgpulse raises on purpose, in one place. The CLI prints any of them as one
line (`pgpulse <command>: error: <message>`, exit status 1), never a traceback."""


class PgPulseError(Exception):
    """Base of every error pgpulse raises on purpose."""


class ConfigError(PgPulseError):
    """A setting (environment variable or option) is missing or malformed."""


class UserInputError(PgPulseError):
    """A command's argument is malformed or names nothing there is (bad region code, bad
    job id, unknown maintenance window): the database was not at fault."""


class UnknownRegion(UserInputError):
    """No region with that code."""


class DatabaseError(PgPulseError):
    """The database refused or could not be reached."""


class DowngradeDropsData(UserInputError):
    """`pgpulse migrate --downgrade` would drop rows or set values, and --force was not given."""


class Undeliverable(PgPulseError):
    """`relay --once` ended with due jobs it could not deliver."""


# ------------------------------------------------------------ publishing to Upstash


class PublishError(PgPulseError):
    """A publish to a region's Upstash endpoint failed."""

    # Whether the region may have run what the failed request (or publish) carried: the
    # safe guess, unless the error proves it did not (see UpstashClient, Publisher). A push
    # that surely never ran leaves no push intent behind.
    may_have_run: bool = True


class TransientError(PublishError):
    """A transport error, timeout or 5xx: worth retrying."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.may_have_run = sent  # sent=False: the request surely never reached the region


class RequestRejected(PublishError):
    """A whole request refused with a 4xx (too large, a proxy's 400): retrying it as it is
    will not help."""

    def __init__(self, region: str, status: int, message: str) -> None:
        super().__init__(f"region {region}: HTTP {status}: {message}")
        self.error = message  # the error text as the region gave it
        self.too_large = "max request size" in message.lower() or status == 413


class MalformedReply(PublishError):
    """A 200 whose body is not the replies we asked for: which commands ran is unknown."""


class RegionRefused(PublishError):
    """Inline errors that concern the whole region (quota, OOM, read-only...): its writes
    fail, whatever the job."""


class TokenRefused(PublishError):
    """The region's endpoint refused our token (HTTP 401/403): retrying will not help."""

    may_have_run = False  # refused before any command ran

    def __init__(self, region: str, status: int) -> None:
        super().__init__(f"region {region}: token refused (HTTP {status})")
        self.region = region


# ------------------------------------------------------------ optional parts, local tooling


class MissingExtra(PgPulseError):
    """A command needs an extra that is not installed."""

    def __init__(self, command: str, extra: str) -> None:
        super().__init__(
            f"pgpulse {command} needs the {extra} extra: pip install 'pgpulse[{extra}]'"
        )


class ServiceError(PgPulseError):
    """A throwaway service (PostgreSQL, redis-server) could not be started."""


class DevServerError(PgPulseError):
    """The dev server could not start, or its admin API refused a request."""
