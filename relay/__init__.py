"""pgpulse: schedule uptime checks inside PostgreSQL, relay them to regional Upstash queues."""

__version__ = "0.2.0"
