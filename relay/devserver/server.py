"""Serving the app under uvicorn: option checks, signals, and `python -m relay.devserver`."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import Any

from relay.devserver.app import DROP_EXTENSION, DevServerApp
from relay.devserver.options import build_parser, serve_arguments
from relay.devserver.redis import RedisTarget
from relay.errors import ConfigError, DevServerError, PgPulseError


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

            self.scope.setdefault("extensions", {})[DROP_EXTENSION] = drop  # type: ignore[assignment]  # ours

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
    redis_compat: str | None = None,
    strict_script_keys: bool = False,
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
    app = DevServerApp(target, tokens, admin_token, faults, redis_compat, strict_script_keys)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=_http_protocol(),
        lifespan="on",
        access_log=False,  # the query string may carry ?_token=
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            app.begin_shutdown()

    server = Server(config)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    dbs = ",".join(str(db) for db in sorted(set(tokens.values())))
    print(
        f"devserver.listening url=http://{host}:{port} redis={target.describe()} dbs={dbs} "
        f"admin={'on' if admin_token else 'off'}"
        + (f" redis-compat={redis_compat}" if redis_compat else "")
        + (" strict-script-keys=on" if strict_script_keys else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run()
    except _Stop:
        pass
    except SystemExit:
        raise DevServerError(
            app.startup_error or f"the devserver could not start on {host}:{port}"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if app.startup_error:
        raise DevServerError(app.startup_error)


def run(options: argparse.Namespace) -> None:
    """Serve with the options of either command line (`options.add_arguments`)."""
    serve(**serve_arguments(options))


def main(argv: list[str] | None = None) -> int:
    """`python -m relay.devserver`: errors end it as they end `pgpulse devserver`, with
    one line and exit code 1 (a usage error: argparse's 2)."""
    parser = build_parser("python -m relay.devserver")
    options = parser.parse_args(argv)
    try:
        run(options)
    except PgPulseError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
