"""What the relays are doing in the database right now, from pg_stat_activity."""

from __future__ import annotations


def listening(conn) -> bool:
    """Has a relay's LISTEN connection been established on this database?"""
    return (
        conn.execute("""
        SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database()
           AND query IN ('LISTEN pgpulse_outbox', 'LISTEN pgpulse_follow')
    """).fetchone()["n"]
        > 0
    )


def open_claims(conn) -> int:
    """Relay transactions holding claimed rows (waiting on their publish)."""
    return conn.execute("""
        SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'pgpulse-relay'
           AND state = 'idle in transaction'
    """).fetchone()["n"]
