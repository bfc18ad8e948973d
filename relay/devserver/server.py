"""Serving the app under uvicorn: option checks, signals, and the command line."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

from relay.devserver.app import DROP_EXTENSION, DevServerApp
from relay.devserver.redis import RedisTarget
from relay.errors import ConfigError, DevServerError, PgPulseError


def parse_token_args(values: list[str]) -> dict[str, int]:
    """Parse repeatable `--token TOKEN[=DB]` values into {token: database number}.

    The database is what follows the last "=", so a base64 token that ends in "="
    padding can be given as is (DB 0) or followed by "=DB". Messages never echo a token.
    """
    if not values:
        raise ConfigError("at least one --token TOKEN[=DB] is required")
    tokens: dict[str, int] = {}
    for position, value in enumerate(values, start=1):
        token, sep, db_text = value.rpartition("=")
        if not sep or not db_text:
            token, db = value, 0
        else:
            try:
                db = int(db_text)
            except ValueError:
                raise ConfigError(
                    f"--token #{position}: the database after the last '=' must be a "
                    f"non-negative integer"
                ) from None
            if db < 0 or not db_text.isdigit():
                raise ConfigError(f"--token #{position}: the database must be a non-negative integer")
        if not token:
            raise ConfigError(f"--token #{position}: the token is empty")
        if any(ch.isspace() for ch in token):
            raise ConfigError(f"--token #{position}: the token contains whitespace")
        if token in tokens:
            raise ConfigError(f"--token #{position}: the same token is given twice")
        tokens[token] = db
    return tokens


TOKENS_ENV = "PGPULSE_DEVSERVER_TOKENS"
ADMIN_TOKEN_ENV = "PGPULSE_DEVSERVER_ADMIN_TOKEN"


def token_args(flags: list[str], env: dict[str, str] | None = None) -> list[str]:
    """`--token` values plus the whitespace-separated TOKEN[=DB] entries of
    $PGPULSE_DEVSERVER_TOKENS: the environment keeps tokens out of `ps` (argv is public)."""
    env = os.environ if env is None else env
    return [*flags, *env.get(TOKENS_ENV, "").split()]


def _http_protocol() -> Any:
    """uvicorn's httptools protocol, extended so the app can drop a connection."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools missing: plain h11, drops degrade to cut responses
        return "h11"

    class DroppableHttpToolsProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is None or cycle.scope is not self.scope:
                return
            transport = self.transport

            def drop() -> None:
                cycle.disconnected = True  # no late 500 from uvicorn
                transport.close()

            self.scope.setdefault("extensions", {})[DROP_EXTENSION] = drop  # type: ignore[typeddict-item]

    return DroppableHttpToolsProtocol


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def serve(
    host: str,
    port: int,
    redis_url: str,
    tokens: dict[str, int],
    admin_token: str | None,
    faults: dict | None = None,
) -> None:
    """Serve the Upstash REST API on host:port until SIGINT or SIGTERM."""
    import uvicorn

    if not tokens:
        raise ConfigError("at least one --token TOKEN[=DB] is required")
    if admin_token is not None and (not admin_token or admin_token in tokens):
        raise ConfigError("--admin-token must be non-empty and differ from every --token")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535 (got {port})")
    target = RedisTarget.parse(redis_url)
    app = DevServerApp(target, tokens, admin_token, faults)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    config = uvicorn.Config(
        app, host=host, port=port, loop="auto", http=_http_protocol(), lifespan="on",
        access_log=False,  # the query string may carry ?_token=
        log_level="warning", server_header=False, timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            app.begin_shutdown()

    server = Server(config)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    dbs = ",".join(str(db) for db in sorted(set(tokens.values())))
    print(f"devserver.listening url=http://{host}:{port} redis={target.describe()} dbs={dbs} "
          f"admin={'on' if admin_token else 'off'}", file=sys.stderr, flush=True)
    try:
        server.run()
    except _Stop:
        pass
    except SystemExit:
        raise DevServerError(app.startup_error or f"the devserver could not start on {host}:{port}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if app.startup_error:
        raise DevServerError(app.startup_error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.devserver",
        description="An Upstash-compatible Redis REST server in front of a real redis-server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
                        help="redis-server to run commands on (env $REDIS_URL)")
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN[=DB]",
                        help="a REST token and the Redis database it maps to (repeatable; "
                             f"visible in ps: prefer ${TOKENS_ENV})")
    parser.add_argument("--admin-token", default=None,
                        help="enables the /_admin fault-injection and stats API (visible in "
                             f"ps: prefer ${ADMIN_TOKEN_ENV})")
    options = parser.parse_args(argv)
    try:
        serve(options.host, options.port, options.redis_url,
              parse_token_args(token_args(options.token)),
              options.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None)
    except PgPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
