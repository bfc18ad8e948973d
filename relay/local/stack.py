"""The whole system on throwaway local parts: PostgreSQL with pg_cron, redis-server, and the
Upstash-compatible dev server standing in for one Upstash database per region. Used by
`pgpulse demo` and the benchmarks."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import psycopg

from relay import migrate
from relay.config import env_suffix
from relay.devserver import DevServer
from relay.local.embedded import EmbeddedPostgres, EmbeddedRedis

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")


class LocalStack:
    """Starts everything on enter, stops and removes everything on exit (also on Ctrl-C)."""

    def __init__(
        self,
        regions: tuple[str, ...] = REGIONS,
        *,
        fast_db: bool = False,
        pg_cron: bool = True,
        pg_settings: dict[str, str] | None = None,
    ) -> None:
        self.region_codes = regions
        self.pg_cron = pg_cron  # False: benchmarks drive every tick themselves
        self.tokens = {code: secrets.token_urlsafe(16) for code in regions}
        self.pg = EmbeddedPostgres(fast=fast_db, settings=pg_settings)
        self.redis = EmbeddedRedis()
        self._devserver: DevServer | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LocalStack:
        try:
            self._stack.enter_context(self.pg)
            self._stack.enter_context(self.redis)
            self._devserver = DevServer(
                self.redis.url, {tok: i + 1 for i, tok in enumerate(self.tokens.values())}
            )
            self._stack.enter_context(self._devserver)
            migrate.upgrade(self.dsn)
            if not self.pg_cron:
                with self.connect() as conn:
                    # by id: the job belongs to pgpulse_ticker, unschedule(name) looks up ours
                    conn.execute(
                        "SELECT cron.unschedule(jobid) FROM cron.job "
                        "WHERE jobname = 'pgpulse-tick' AND database = current_database()"
                    )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def devserver(self) -> DevServer:
        assert self._devserver is not None, "the stack is not started"
        return self._devserver

    @property
    def dsn(self) -> str:
        return self.pg.dsn()

    def env(self) -> dict[str, str]:
        """What a relay needs: DATABASE_URL and one Upstash URL/token pair per region."""
        env = {"DATABASE_URL": self.dsn}
        for code, token in self.tokens.items():
            env[f"UPSTASH_REDIS_REST_URL_{env_suffix(code)}"] = self.devserver.url
            env[f"UPSTASH_REDIS_REST_TOKEN_{env_suffix(code)}"] = token
        return env

    def redis_db(self, region: str) -> int:
        return self.region_codes.index(region) + 1

    def create_regions(self, conn: psycopg.Connection) -> None:
        """The first region is the default; each falls back to the next."""
        for i, code in enumerate(self.region_codes):
            conn.execute(
                "INSERT INTO pgpulse.regions (code, is_default) VALUES (%s, %s)", (code, i == 0)
            )
        for i, code in enumerate(self.region_codes):
            fallback = self.region_codes[(i + 1) % len(self.region_codes)]
            if fallback != code:
                conn.execute(
                    "UPDATE pgpulse.regions SET fallback_region = %s WHERE code = %s",
                    (fallback, code),
                )

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)

    def set_region_down(self, region: str, down: bool = True) -> None:
        """Makes one region's Upstash endpoint answer 503 to everything (or heals it)."""
        if down:
            self.devserver.set_faults(
                {"error_rate": 1.0, "error_statuses": [503]}, tokens=[self.tokens[region]]
            )
        else:
            self.devserver.clear_faults()
