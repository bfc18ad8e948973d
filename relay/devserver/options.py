"""The dev server's command line, one definition for `pgpulse devserver` and
`python -m relay.devserver` (same options, defaults, environment and exit codes).

Kept free of the server's imports: `pgpulse` builds this parser for every command."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from relay.config import DEVSERVER_ADMIN_TOKEN, DEVSERVER_TOKENS, REDIS_URL
from relay.errors import ConfigError

REDIS_COMPAT = ("6.2",)  # relay.devserver.tenants.NEWER_THAN_6_2 is what 6.2 lacks
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8079
# the variables are rows of the settings table (relay.config, docs/settings.md)
DEFAULT_REDIS_URL = REDIS_URL.default
REDIS_URL_ENV = REDIS_URL.env
TOKENS_ENV = DEVSERVER_TOKENS.env
ADMIN_TOKEN_ENV = DEVSERVER_ADMIN_TOKEN.env
DESCRIPTION = (
    "Serve Upstash's Redis REST API on top of a redis-server. Each --token "
    "TOKEN[=DB] maps a bearer token to a Redis database."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    # No argparse default: the help would print $REDIS_URL, password included.
    parser.add_argument(
        "--redis-url",
        default=argparse.SUPPRESS,
        help=f"redis-server to run commands on (default: ${REDIS_URL_ENV}, "
        f"else {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN[=DB]",
        help="accepted bearer token and its Redis database number (repeatable; "
        f"visible in ps: prefer ${TOKENS_ENV}, whitespace-separated)",
    )
    parser.add_argument(
        "--admin-token",
        default=None,  # never printed: it is a secret
        help=f"token of the fault-injection admin API (env ${ADMIN_TOKEN_ENV}; "
        "unset: admin API off)",
    )
    parser.add_argument(
        "--redis-compat",
        choices=REDIS_COMPAT,
        default=None,
        help="refuse the commands Redis added after this version, in scripts too "
        "(Upstash documents Redis 6.2 compatibility); default: whatever redis-server has",
    )
    parser.add_argument(
        "--strict-script-keys",
        action="store_true",
        help="fail a script that touches a key not passed in its KEYS (Upstash asks for every "
        "key in KEYS and refuses others under allow-key-locking; Redis Cluster refuses them)",
    )


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(parser)
    return parser


def serve_arguments(
    options: argparse.Namespace, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The keyword arguments of `serve` from parsed options and the environment."""
    env = os.environ if env is None else env
    return {
        "host": options.host,
        "port": options.port,
        "redis_url": getattr(options, "redis_url", None)
        or env.get(REDIS_URL_ENV)
        or DEFAULT_REDIS_URL,
        "tokens": parse_token_args(token_args(options.token, env)),
        "admin_token": options.admin_token or env.get(ADMIN_TOKEN_ENV) or None,
        "redis_compat": getattr(options, "redis_compat", None),
        "strict_script_keys": getattr(options, "strict_script_keys", False),
    }


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
                raise ConfigError(
                    f"--token #{position}: the database must be a non-negative integer"
                )
        if not token:
            raise ConfigError(f"--token #{position}: the token is empty")
        if any(ch.isspace() for ch in token):
            raise ConfigError(f"--token #{position}: the token contains whitespace")
        if token in tokens:
            raise ConfigError(f"--token #{position}: the same token is given twice")
        tokens[token] = db
    return tokens


def token_args(flags: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """`--token` values plus the whitespace-separated TOKEN[=DB] entries of
    $PGPULSE_DEVSERVER_TOKENS: the environment keeps tokens out of `ps` (argv is public)."""
    env = os.environ if env is None else env
    return [*flags, *env.get(TOKENS_ENV, "").split()]
