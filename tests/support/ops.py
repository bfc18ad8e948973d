"""What the operations suites share: `pgpulse doctor`'s output as checks, the login roles of
sql/roles.sql's group roles, and alert settings fast enough for a test."""

from __future__ import annotations

# a login role in each of pgpulse's group roles (the roles are the cluster's: made once)
LOGINS = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relay_app') THEN
        CREATE ROLE relay_app LOGIN IN ROLE pgpulse_relay;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ticker_app') THEN
        CREATE ROLE ticker_app LOGIN IN ROLE pgpulse_ticker;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'monitor_app') THEN
        CREATE ROLE monitor_app LOGIN IN ROLE pgpulse_monitor;
    END IF;
END
$$
"""

FAST_ALERTS = {
    "PGPULSE_ALERT_INTERVAL_S": "0.2",
    "PGPULSE_ALERT_BREAKER_OPEN_S": "1",
    "PGPULSE_BREAKER_FAILURES": "2",
    "PGPULSE_BREAKER_COOLDOWN_S": "0.5",
    "PGPULSE_RETRY_WINDOW_S": "0.5",
    "PGPULSE_ALERT_BACKLOG_AGE_S": "3600",
}


def doctor_checks(out: str) -> dict[str, tuple[str, str]]:
    """`pgpulse doctor`'s lines: check name -> (verdict, detail)."""
    found = {}
    for line in out.splitlines():
        verdict, rest = line.split(None, 1)
        name, _, detail = rest.partition(": ")
        found[name] = (verdict, detail)
    return found
