"""One base exception for pgpulse; the CLI prints its message as a single line."""


class PgPulseError(Exception):
    """Base of every error pgpulse raises on purpose."""


class ConfigError(PgPulseError):
    """A setting is missing or malformed."""


class PublishError(PgPulseError):
    """A publish to a region's Upstash endpoint failed."""
