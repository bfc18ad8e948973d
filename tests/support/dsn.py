"""Connection URLs of the throwaway cluster (postgresql://postgres@127.0.0.1:PORT/DB) as
another user, or with a password."""

from __future__ import annotations


def as_user(dsn: str, user: str) -> str:
    return dsn.replace("postgres@", f"{user}@")


def with_password(dsn: str, password: str) -> str:
    return dsn.replace("postgres@", f"postgres:{password}@")
