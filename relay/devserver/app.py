"""An Upstash-compatible Redis REST server in front of a real redis-server.

`pgpulse devserver` (or `python -m relay.devserver`) lets the relay, the official
Upstash SDKs and plain HTTP clients talk to a local redis-server as if it were
Upstash Redis. Each `--token TOKEN[=DB]` is one "database": the token maps to a Redis
database number, so one server can stand in for several regions.

Protocol (as Upstash's REST API documents it)
---------------------------------------------
- `POST /` with a JSON array `["SET", "k", "v"]`; numbers and booleans are allowed as
  arguments and sent to Redis as their JSON text (`100`, `1.5`, `true`).
- Path form `GET|POST /set/k/v?EX=100`: segments are percent-decoded, a POST body is
  appended as the last argument, query parameters (except `_token`) after it.
- `POST /pipeline` and `POST /multi-exec` with an array of arrays. A pipeline answers
  `[{"result": ...}, {"error": ...}]` with HTTP 200, errors inline. A transaction runs as
  one MULTI/EXEC block written contiguously on one connection; run-time errors come back
  inline, a refused or malformed command discards the whole transaction (HTTP 400).
- Success `{"result": x}`, failure `{"error": "..."}` (HTTP 400 for a single command).
- 401 `WRONGPASS invalid or missing auth token...` without a valid
  `Authorization: Bearer <token>` or `?_token=<token>`; 405 for methods other than
  HEAD, GET, POST, PUT; 400 `ERR max request size exceeded. Limit: 10485760 bytes,
  Actual: N bytes` for bodies (and responses) over 10 MiB.
- `Upstash-Encoding: base64` base64-encodes every string in the result, recursively,
  except "OK". Every authenticated response carries an `Upstash-Sync-Token` header; the
  request header is accepted and ignored (one primary, nothing to wait for).
- Commands the REST API does not offer are refused with Upstash's text
  `ERR Command is not available: 'BLPOP'. See https://upstash.com/docs/redis/overall/
  rediscompatibility for details`: blocking commands (BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
  BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD/XREADGROUP with BLOCK, WAIT), connection
  commands other than PING and ECHO (SELECT, AUTH, CLIENT, ...), MULTI/EXEC/WATCH as
  commands, SUBSCRIBE and MONITOR, and whatever would let one token reach another
  token's database (MOVE, SWAPDB, COPY ... DB). FLUSHALL only flushes the token's own
  database. Redis's own "unknown command" errors are rewritten into the same text.
- Not implemented: `Upstash-Response-Format: resp2` (answered with 400), the
  server-sent-events endpoints `/subscribe` and `/monitor`, read-only tokens.

Admin API (only with `--admin-token`; otherwise every `/_admin/...` path is 404)
------------------------------------------------------------------------------
All admin requests need `Authorization: Bearer <admin token>` (401 otherwise), are never
faulted and are not counted in the stats.

- `GET /_admin/faults` — the fault rules in force:
  `{"default": {...} | null, "scoped": [{"db": 1, "token_hint": "ab…", ...}]}`.
- `POST /_admin/faults` (or PUT) — install a rule, body:

      {"tokens": ["tok-a"],         # optional: only these tokens; omitted = every token
       "latency_ms": 50,            # added to every request
       "jitter_ms": 20,             # plus uniform 0..jitter_ms
       "error_rate": 0.1,           # share of requests answered with an error status
       "error_statuses": [500, 502, 503],
       "hang_rate": 0.0,            # share of requests never answered (until the client leaves)
       "drop_rate": 0.0,            # share of connections closed without a response
       "inline_error_rate": 0.0,    # share of /pipeline commands answered with an inline error
       "inline_error": "ERR devserver injected fault",
       "phase": "before",           # "after": run the commands, then fail the response
       "seed": 42}                  # optional: reseed the fault dice

  Every field is optional (default 0 / off). A rule for listed tokens replaces the
  default rule for those tokens; a rule without `tokens` replaces the default rule.
  `error_rate + hang_rate + drop_rate` must not exceed 1.
- `DELETE /_admin/faults` — remove every rule.
- `GET /_admin/stats` — `{"requests", "responses": {"200": n, ...}, "commands",
  "kinds": {"command", "pipeline", "multi-exec"}, "faults": {"latency", "error", "hang",
  "drop", "inline_error"}, "dbs": {"0": {"requests", "commands"}}, "uptime_s"}`.
- `DELETE /_admin/stats` — reset the counters.

`DevServer` runs the server in a subprocess for tests, benchmarks and the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import collections
import contextlib
import itertools
import json
import logging
import operator
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import hiredis

from relay.errors import ConfigError, PgPulseError

MAX_REQUEST_BYTES = 10 * 1024 * 1024
POOL_SIZE = 4  # connections per Redis database, opened on demand
_COMPAT_URL = "https://upstash.com/docs/redis/overall/rediscompatibility"
_UNAUTHORIZED = (
    b'{"error":"WRONGPASS invalid or missing auth token. See '
    b'https://docs.upstash.com/redis/troubleshooting/http_unauthorized for details."}'
)
_METHOD_NOT_ALLOWED = b'{"error":"ERR method not allowed, use HEAD, GET, POST or PUT"}'
_ALLOWED_METHODS = frozenset({"HEAD", "GET", "POST", "PUT"})
_BODY_METHODS = frozenset({"POST", "PUT"})
_ADMIN_PREFIX = "/_admin"
_FAULT_KINDS = ("latency", "error", "hang", "drop", "inline_error")
_ReplyError = hiredis.ReplyError
_log = logging.getLogger("pgpulse.devserver")


class DevServerError(PgPulseError):
    """The dev server could not start, or its admin API refused a request."""


# -- configuration ------------------------------------------------------------------


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


class _RedisTarget(NamedTuple):
    host: str
    port: int
    path: str | None
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> "_RedisTarget":
        """redis://[user:password@]host[:port][/db] or unix:///path/to/socket."""
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ConfigError("--redis-url: unix:// needs a socket path")
            return cls("", 0, parts.path, username, password)
        if parts.scheme != "redis":
            raise ConfigError(
                f"--redis-url must start with redis:// or unix:// (got {parts.scheme or 'no'} scheme)"
            )
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError("--redis-url has an invalid port") from None
        return cls(parts.hostname or "127.0.0.1", port, None, username, password)

    def describe(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


# -- faults -------------------------------------------------------------------------


class _FaultRule:
    """One fault-injection rule, validated."""

    _FIELDS = {
        "latency_ms", "jitter_ms", "error_rate", "error_statuses", "hang_rate", "drop_rate",
        "inline_error_rate", "inline_error", "phase", "seed",
    }

    def __init__(self, spec: dict[str, Any]) -> None:
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        self.latency_ms = self._number(spec, "latency_ms", 0.0, 600_000.0)
        self.jitter_ms = self._number(spec, "jitter_ms", 0.0, 600_000.0)
        self.error_rate = self._number(spec, "error_rate", 0.0, 1.0)
        self.hang_rate = self._number(spec, "hang_rate", 0.0, 1.0)
        self.drop_rate = self._number(spec, "drop_rate", 0.0, 1.0)
        self.inline_error_rate = self._number(spec, "inline_error_rate", 0.0, 1.0)
        if self.error_rate + self.hang_rate + self.drop_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + hang_rate + drop_rate must not exceed 1")
        statuses = spec.get("error_statuses", [500, 502, 503])
        if (not isinstance(statuses, list) or not statuses
                or not all(type(s) is int and 400 <= s <= 599 for s in statuses)):
            raise ValueError("error_statuses must be a non-empty list of HTTP statuses 400-599")
        self.error_statuses = statuses
        inline_error = spec.get("inline_error", "ERR devserver injected fault")
        if not isinstance(inline_error, str) or not inline_error:
            raise ValueError("inline_error must be a non-empty string")
        self.inline_error = inline_error
        self.phase = spec.get("phase", "before")
        if self.phase not in ("before", "after"):
            raise ValueError('phase must be "before" or "after"')
        self.seed = spec.get("seed")
        if self.seed is not None and type(self.seed) is not int:
            raise ValueError("seed must be an integer")
        self.delays = self.latency_ms > 0 or self.jitter_ms > 0

    @staticmethod
    def _number(spec: dict[str, Any], name: str, low: float, high: float) -> float:
        value = spec.get(name, 0)
        if type(value) not in (int, float) or not low <= value <= high:
            raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
        return float(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms, "jitter_ms": self.jitter_ms,
            "error_rate": self.error_rate, "error_statuses": self.error_statuses,
            "hang_rate": self.hang_rate, "drop_rate": self.drop_rate,
            "inline_error_rate": self.inline_error_rate, "inline_error": self.inline_error,
            "phase": self.phase,
        }

    def delay_s(self, rng: random.Random) -> float:
        return (self.latency_ms + rng.uniform(0.0, self.jitter_ms)) / 1000.0

    def draw(self, rng: random.Random) -> str | int | None:
        """Roll the dice for one request: "drop", "hang", an error status, or None."""
        u = rng.random()
        if u < self.drop_rate:
            return "drop"
        u -= self.drop_rate
        if u < self.hang_rate:
            return "hang"
        u -= self.hang_rate
        if u < self.error_rate:
            return rng.choice(self.error_statuses)
        return None


class _Faults:
    """The default rule and the per-token rules."""

    def __init__(self, tokens: dict[str, int]) -> None:
        self.tokens = tokens
        self.default: _FaultRule | None = None
        self.by_token: dict[str, _FaultRule] = {}
        self.rng = random.Random()

    def rule_for(self, token: str) -> _FaultRule | None:
        return self.by_token.get(token, self.default) if self.by_token else self.default

    def install(self, spec: Any) -> None:
        """Apply an admin spec (see the module docstring); raises ValueError."""
        if not isinstance(spec, dict):
            raise ValueError("the fault spec must be a JSON object")
        spec = dict(spec)
        tokens = spec.pop("tokens", None)
        rule = _FaultRule(spec)
        if rule.seed is not None:
            self.rng.seed(rule.seed)
        if tokens is None:
            self.default = rule
            return
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("tokens must be a list of strings")
        for position, token in enumerate(tokens, start=1):
            if token not in self.tokens:
                raise ValueError(f"tokens #{position} is not a token this server knows")
        for token in tokens:
            self.by_token[token] = rule

    def clear(self) -> None:
        self.default = None
        self.by_token.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "default": self.default.as_dict() if self.default else None,
            "scoped": [
                {"db": self.tokens[token], "token_hint": token[:4] + "…", **rule.as_dict()}
                for token, rule in self.by_token.items()
            ],
        }


class _Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.commands = 0
        self.responses: collections.Counter[int] = collections.Counter()
        self.kinds: collections.Counter[str] = collections.Counter()
        self.faults = dict.fromkeys(_FAULT_KINDS, 0)
        self.db_requests: collections.Counter[int] = collections.Counter()
        self.db_commands: collections.Counter[int] = collections.Counter()

    def as_dict(self) -> dict[str, Any]:
        dbs = sorted(set(self.db_requests) | set(self.db_commands))
        return {
            "requests": self.requests,
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "commands": self.commands,
            "kinds": dict(self.kinds),
            "faults": dict(self.faults),
            "dbs": {str(db): {"requests": self.db_requests[db], "commands": self.db_commands[db]}
                    for db in dbs},
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


# -- Redis connections --------------------------------------------------------------


class _RedisConnection(asyncio.Protocol):
    """One connection to redis-server; many requests may be in flight on it at once.

    A request writes all of its commands in one write and waits for as many replies;
    Redis answers in order, so a FIFO of waiters lines replies up with requests.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.waiters: collections.deque[list] = collections.deque()
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        gets = reader.gets
        try:
            while waiters:
                waiter = waiters[0]
                replies, missing, decode = waiter[0], waiter[1], waiter[2]
                append = replies.append
                while missing:
                    reply = gets(decode)
                    if reply is False:
                        waiter[1] = missing
                        return
                    append(reply)
                    missing -= 1
                waiters.popleft()
                future = waiter[3]
                if not future.done():
                    future.set_result(replies)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("the connection to redis-server was lost"))

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiters:
            future = self.waiters.popleft()[3]
            if not future.done():
                future.set_exception(exc)

    def call(self, payload: bytes, replies: int, decode: bool) -> asyncio.Future:
        if self.lost is not None:
            raise self.lost
        future = asyncio.get_running_loop().create_future()
        self.waiters.append([[], replies, decode, future])
        self.transport.write(payload)  # type: ignore[union-attr]
        return future


class _RedisPool:
    """A few connections to one Redis database, each SELECTed once when opened."""

    def __init__(self, target: _RedisTarget, db: int, size: int = POOL_SIZE) -> None:
        self.target = target
        self.db = db
        self.size = size
        self.conns: list[_RedisConnection] = []
        self.lock = asyncio.Lock()

    async def _open(self) -> _RedisConnection:
        loop = asyncio.get_running_loop()
        target = self.target
        try:
            if target.path:
                _, conn = await loop.create_unix_connection(_RedisConnection, target.path)
            else:
                _, conn = await loop.create_connection(_RedisConnection, target.host, target.port)
        except OSError as exc:
            raise ConnectionError(
                f"cannot connect to redis-server at {target.describe()}: {exc.strerror or exc}"
            ) from None
        hello: list[list[bytes]] = []
        if target.password is not None:
            auth = [b"AUTH", target.password.encode()]
            if target.username:
                auth.insert(1, target.username.encode())
            hello.append(auth)
        hello.append([b"SELECT", str(self.db).encode()])
        hello.append([b"CLIENT", b"SETNAME", f"pgpulse-devserver-db{self.db}".encode()])
        replies = await conn.call(b"".join(_encode_bytes_command(c) for c in hello), len(hello), True)
        for command, reply in zip(hello, replies):
            if isinstance(reply, _ReplyError):
                conn.transport.close()  # type: ignore[union-attr]
                what = command[0].decode()
                raise ConnectionError(f"redis-server refused {what} for database {self.db}: {reply}")
        return conn

    async def _connection(self) -> _RedisConnection:
        best: _RedisConnection | None = None
        best_load = 1 << 30
        alive = 0
        for conn in self.conns:
            if conn.lost is None:
                alive += 1
                load = len(conn.waiters)
                if load < best_load:
                    best, best_load = conn, load
        if best is not None and (best_load == 0 or alive >= self.size):
            return best
        async with self.lock:
            self.conns[:] = [c for c in self.conns if c.lost is None]
            if len(self.conns) < self.size:
                conn = await self._open()
                self.conns.append(conn)
                return conn
        return min(self.conns, key=lambda c: len(c.waiters))

    async def call(self, payload: bytes, replies: int, decode: bool) -> list:
        conn = await self._connection()
        return await conn.call(payload, replies, decode)

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        self.conns.clear()


# -- commands: validation, policy, RESP encoding ------------------------------------


class _BadRequest(Exception):
    """The request is malformed or refused as a whole: HTTP 400 with this message."""


def _not_available(name: str) -> str:
    return f"ERR Command is not available: '{name.upper()}'. See {_COMPAT_URL} for details"


# Not offered by Upstash's REST API, or able to break the connection pool or reach
# another token's database.
_REFUSED = frozenset({
    # blocking
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "WAIT", "WAITAOF",
    # connection: only PING and ECHO are offered
    "AUTH", "HELLO", "SELECT", "QUIT", "RESET", "CLIENT", "READONLY", "READWRITE", "ASKING",
    # transactions go through /multi-exec
    "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH",
    # pub/sub: only PUBLISH and PUBSUB
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    # server and replication, other databases
    "MONITOR", "SYNC", "PSYNC", "REPLCONF", "REPLICAOF", "SLAVEOF", "FAILOVER", "SHUTDOWN",
    "DEBUG", "CONFIG", "MODULE", "ACL", "CLUSTER", "SWAPDB", "MOVE", "MIGRATE",
})
_SPECIAL = frozenset({"FLUSHALL", "XREAD", "XREADGROUP", "COPY"})
_PASS = object()   # run as is
_CHECK = object()  # depends on the arguments: see _check
_policies: dict[str, object] = {}


def _policy(name: str) -> object:
    """_PASS, _CHECK or the refusal message."""
    upper = name.upper()
    if upper in _REFUSED:
        policy: object = _not_available(name)
    elif upper in _SPECIAL:
        policy = _CHECK
    else:
        policy = _PASS
    if len(_policies) < 4096:
        _policies[name] = policy
    return policy


def _text(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("latin-1")
    if isinstance(arg, bool):
        return "true" if arg else "false"
    return arg


def _check(cmd: list) -> list | str:
    """Rewrite or refuse a command whose meaning depends on its arguments."""
    name = _text(cmd[0]).upper()
    words = [_text(a).upper() for a in cmd[1:]]
    if name == "FLUSHALL":  # one token's FLUSHALL must not empty the other regions
        return [b"FLUSHDB" if isinstance(cmd[0], bytes) else "FLUSHDB", *cmd[1:]]
    if name in ("XREAD", "XREADGROUP"):
        for word in words:
            if word == "STREAMS":
                break
            if word == "BLOCK":
                return _not_available(f"{name} BLOCK")
    if name == "COPY" and "DB" in words:
        return _not_available("COPY DB")
    return cmd


_ARG = "${}\r\n{}\r\n".format


def _where(kind: str, index: int) -> str:
    if kind == "command":
        return "ERR failed to parse command"
    return f"ERR failed to parse {kind} request: command {index}"


def _encode_json_command(out: list[str], cmd: list, kind: str, index: int) -> None:
    """Append one command as RESP text (all-ASCII fast path; UTF-8 lengths otherwise)."""
    try:
        if all(map(str.isascii, cmd)):
            out.append(f"*{len(cmd)}\r\n")
            out.extend(map(_ARG, map(len, cmd), cmd))
            return
    except TypeError:
        pass
    where = _where(kind, index)
    if cmd[0].__class__ is not str:
        raise _BadRequest(f"{where}: the command name must be a string")
    out.append(f"*{len(cmd)}\r\n")
    for position, arg in enumerate(cmd):
        kind = arg.__class__
        if kind is str:
            if arg.isascii():
                size = len(arg)
            else:
                try:
                    size = len(arg.encode("utf-8"))
                except UnicodeEncodeError:
                    raise _BadRequest(f"{where}: argument {position} is not valid Unicode") from None
        elif kind is bool:
            arg = "true" if arg else "false"
            size = len(arg)
        else:
            raise _BadRequest(
                f"{where}: argument {position} must be a string, a number or a boolean"
            )
        out.append(f"${size}\r\n{arg}\r\n")


def _encode_bytes_command(args: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


_chain = itertools.chain.from_iterable
_SIZE_PREFIXES = ["$%d" % n for n in range(16384)]
_size_prefix = _SIZE_PREFIXES.__getitem__
_first = operator.itemgetter(0)


def _encode_fast(cmds: list) -> str | None:
    """RESP text for well-formed commands whose names all pass the policy, else None.

    The common pipeline (a thousand LPUSH or EVALSHA of strings) is encoded with C-level
    map/join/slice operations instead of a Python loop over every argument.
    """
    if not all(cmd.__class__ is list and cmd for cmd in cmds):
        return None
    flat = list(_chain(cmds))
    try:
        if all(map(str.isascii, flat)):
            sizes = list(map(len, flat))
        else:
            sizes = list(map(len, map(str.encode, flat)))
    except (TypeError, UnicodeEncodeError):  # a non-string argument, a lone surrogate
        return None
    policies = _policies
    for name in set(map(_first, cmds)):
        policy = policies.get(name)
        if policy is None:
            policy = _policy(name)
        if policy is not _PASS:
            return None
    try:
        heads = list(map(_size_prefix, sizes))
    except IndexError:  # an argument of 16 KiB or more
        heads = ["$%d" % n for n in sizes]
    position = 0
    for cmd in cmds:
        heads[position] = f"*{len(cmd)}\r\n{heads[position]}"
        position += len(cmd)
    parts: list[str | None] = [None] * (2 * len(flat))
    parts[0::2] = heads
    parts[1::2] = flat
    parts.append("")
    return "\r\n".join(parts)  # type: ignore[arg-type]


def _compile(
    cmds: list, kind: str, *, refuse_whole: bool, skip: set[int] | None = None,
    inline_error: str = "",
) -> tuple[list[str], list | None, int, int]:
    """Validate and encode JSON commands.

    Returns the RESP text parts, the plan (None when every command runs, else one entry
    per command: None to run it, or the inline error it gets instead), how many commands
    run and how many got the injected inline error.
    """
    if not skip:
        text = _encode_fast(cmds)
        if text is not None:
            return [text], None, len(cmds), 0
    out: list[str] = []
    plan: list | None = None
    runs = injected = 0
    policies = _policies
    for index, cmd in enumerate(cmds):
        if cmd.__class__ is not list or not cmd:
            raise _BadRequest(f"{_where(kind, index)}: a command must be a non-empty JSON array")
        mark = len(out)
        _encode_json_command(out, cmd, kind, index)
        policy = policies.get(cmd[0])
        if policy is None:
            policy = _policy(cmd[0])
        refusal = None
        if policy is not _PASS:
            if policy is _CHECK:
                checked = _check(cmd)
                if isinstance(checked, str):
                    refusal = checked
                elif checked is not cmd:
                    del out[mark:]
                    _encode_json_command(out, checked, kind, index)
            else:
                refusal = policy  # type: ignore[assignment]
        if refusal is None and skip and index in skip:
            refusal = inline_error
            injected += 1
        if refusal is not None:
            if refuse_whole:
                raise _BadRequest(refusal)
            del out[mark:]
            if plan is None:
                plan = [None] * index
            plan.append(refusal)
            continue
        if plan is not None:
            plan.append(None)
        runs += 1
    return out, plan, runs, injected


# -- results: Redis replies to Upstash JSON -----------------------------------------


def _error_text(error: _ReplyError) -> str:
    message = error.args[0] if error.args else str(error)
    prefix = "ERR unknown command '"
    if message.startswith(prefix):
        rest = message[len(prefix):]
        cut = rest.find("', with args beginning with:")
        return _not_available(rest[:cut] if cut >= 0 else rest.rstrip("' "))
    return message


def _b64(reply: Any) -> Any:
    kind = reply.__class__
    if kind is bytes:
        return "OK" if reply == b"OK" else binascii.b2a_base64(reply, newline=False).decode("ascii")
    if kind is list:
        return [_b64(item) for item in reply]
    return reply


def _json_default(obj: Any) -> Any:
    if isinstance(obj, _ReplyError):  # an error nested inside an array reply
        return _error_text(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_json_default, check_circular=False
).encode


def _dumps(obj: Any) -> bytes:
    return _encode_json(obj).encode("utf-8")


def _results(replies: list, plan: list | None, b64: bool) -> list[dict]:
    if plan is None:
        if b64:
            replies = [r if r.__class__ is _ReplyError else _b64(r) for r in replies]
        return [{"error": _error_text(r)} if r.__class__ is _ReplyError else {"result": r}
                for r in replies]
    items: list[dict] = []
    feed = iter(replies)
    for refusal in plan:
        if refusal is not None:
            items.append({"error": refusal})
            continue
        reply = next(feed)
        if reply.__class__ is _ReplyError:
            items.append({"error": _error_text(reply)})
        else:
            items.append({"result": _b64(reply) if b64 else reply})
    return items


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Numbers keep the text the client wrote: Redis receives `100`, `1.5`, `1e3` verbatim.
_decode_json = json.JSONDecoder(
    parse_int=str, parse_float=str, parse_constant=_reject_constant
).decode


def _query_pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        pairs.append((unquote_to_bytes(key.replace(b"+", b" ")),
                      unquote_to_bytes(value.replace(b"+", b" "))))
    return pairs


# -- the ASGI application -----------------------------------------------------------


class _Reply(Exception):
    """Answer now with this status and JSON body."""

    def __init__(self, status: int, body: bytes, close: bool = False) -> None:
        super().__init__(status)
        self.status, self.body, self.close = status, body, close


def _error_body(message: str) -> bytes:
    return _dumps({"error": message})


def _size_error(actual: int) -> bytes:
    return _error_body(
        f"ERR max request size exceeded. Limit: {MAX_REQUEST_BYTES} bytes, Actual: {actual} bytes"
    )


class DevServerApp:
    """The raw ASGI application behind `serve`."""

    def __init__(
        self,
        redis: _RedisTarget,
        tokens: dict[str, int],
        admin_token: str | None = None,
        faults: dict | None = None,
    ) -> None:
        self.redis = redis
        self.tokens = dict(tokens)
        self.admin_token = admin_token
        self.faults = _Faults(self.tokens)
        if faults:
            try:
                self.faults.install(faults)
            except ValueError as exc:
                raise ConfigError(f"faults: {exc}") from None
        self.stats = _Stats()
        self.pools: dict[int, _RedisPool] = {}
        self.startup_error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self._sync_prefix = "%08x" % random.getrandbits(32)
        self._sync = itertools.count(1)

    # lifecycle

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for db in sorted(set(self.tokens.values())):
            pool = _RedisPool(self.redis, db)
            pool.conns.append(await pool._open())  # fail fast: reachable, database exists
            self.pools[db] = pool

    async def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def begin_shutdown(self) -> None:
        """Release hung requests (called from the signal handler)."""
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except (ConnectionError, OSError) as exc:
                    self.startup_error = str(exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # HTTP

    async def _respond(
        self, send: Any, status: int, body: bytes, *, sync: bool = False, close: bool = False,
        extra: tuple = (),
    ) -> None:
        self.stats.responses[status] += 1
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", b"%d" % len(body))]
        if sync:
            headers.append((b"upstash-sync-token",
                            f"{self._sync_prefix}-{next(self._sync)}".encode("ascii")))
        if close:
            headers.append((b"connection", b"close"))
        headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, receive: Any, content_length: bytes | None) -> bytes | None:
        """The request body, None if the client left; _Reply(400) when over the limit."""
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                declared = 0
            if declared > MAX_REQUEST_BYTES:
                raise _Reply(400, _size_error(declared), close=True)
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_REQUEST_BYTES:
                    raise _Reply(400, _size_error(size), close=True)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith(_ADMIN_PREFIX) and (len(path) == len(_ADMIN_PREFIX) or path[len(_ADMIN_PREFIX)] == "/"):
            await self._admin(scope, receive, send)
            return
        self.stats.requests += 1
        started = [False]

        async def tracked_send(message: dict) -> None:
            started[0] = True
            await send(message)

        try:
            await self._redis_api(scope, receive, tracked_send, path)
        except _Reply as reply:
            await self._respond(send, reply.status, reply.body, close=reply.close)
        except Exception as exc:  # a bug: answer in Upstash's shape, log the traceback here
            _log.exception("devserver.internal_error")
            if not started[0]:
                await self._respond(send, 500, _error_body(
                    f"ERR devserver internal error ({type(exc).__name__})"), close=True)

    async def _redis_api(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        method = scope["method"]
        if method not in _ALLOWED_METHODS:
            raise _Reply(405, _METHOD_NOT_ALLOWED)
        auth = encoding = content_length = response_format = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
            elif name == b"upstash-encoding":
                encoding = value
            elif name == b"content-length":
                content_length = value
            elif name == b"upstash-response-format":
                response_format = value
        query_string = scope.get("query_string", b"")
        query = _query_pairs(query_string) if query_string else []
        token = None
        if auth is not None and auth[:7].lower() == b"bearer ":
            token = auth[7:].strip().decode("utf-8", "replace")
        elif query:
            for key, value in query:
                if key == b"_token":
                    token = value.decode("utf-8", "replace")
                    break
        db = self.tokens.get(token) if token is not None else None
        if db is None:
            raise _Reply(401, _UNAUTHORIZED)
        stats = self.stats
        stats.db_requests[db] += 1
        if response_format is not None and response_format.lower() != b"json":
            if response_format.lower() == b"resp2":
                raise _Reply(400, _error_body("ERR the devserver does not implement Upstash-Response-Format: resp2"))
            raise _Reply(400, _error_body("ERR invalid Upstash-Response-Format, use json or resp2"))
        b64 = encoding is not None and encoding.lower() == b"base64"

        body = await self._read_body(receive, content_length)
        if body is None:
            return

        rule = self.faults.rule_for(token) if (self.faults.default or self.faults.by_token) else None
        fault = None
        if rule is not None:
            rng = self.faults.rng
            if rule.delays:
                stats.faults["latency"] += 1
                await asyncio.sleep(rule.delay_s(rng))
            fault = rule.draw(rng)
            if fault is not None and rule.phase == "before":
                await self._inject(fault, scope, receive, send)
                return

        route = path.rstrip("/") if len(path) > 1 else path
        try:
            if route == "/pipeline" or route == "/multi-exec":
                if method not in _BODY_METHODS:
                    raise _Reply(405, _METHOD_NOT_ALLOWED)
                status, payload = await self._run_json(route[1:], body, db, b64, rule)
            elif route == "/":
                status, payload = await self._run_json("command", body, db, b64, rule)
            else:
                status, payload = await self._run_path(scope, method, body, query, db, b64)
        except _BadRequest as exc:
            status, payload = 400, _error_body(str(exc))
        except ConnectionError as exc:
            status, payload = 503, _error_body(f"ERR devserver: {exc}")
        if len(payload) > MAX_REQUEST_BYTES:
            status, payload = 400, _size_error(len(payload))
        if fault is not None:  # phase "after": the commands ran, the answer is lost
            await self._inject(fault, scope, receive, send)
            return
        await self._respond(send, status, payload, sync=True)

    async def _run_json(
        self, kind: str, body: bytes, db: int, b64: bool, rule: _FaultRule | None
    ) -> tuple[int, bytes]:
        self.stats.kinds[kind] += 1
        what = "command" if kind == "command" else f"{kind} request"
        try:
            data = _decode_json(body.decode("utf-8"))
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            raise _BadRequest(f"ERR failed to parse {what}: the body is not valid JSON") from None
        if data.__class__ is not list:
            raise _BadRequest(f"ERR failed to parse {what}: the body must be a JSON array")
        if not data:
            raise _BadRequest(f"ERR failed to parse {what}: it is empty")
        if kind == "command":
            out, plan, runs, _ = _compile([data], kind, refuse_whole=True)
        elif kind == "pipeline":
            skip = None
            inline_error = ""
            if rule is not None and rule.inline_error_rate > 0:
                rng, p = self.faults.rng, rule.inline_error_rate
                skip = {i for i in range(len(data)) if rng.random() < p}
                inline_error = rule.inline_error
            out, plan, runs, injected = _compile(data, kind, refuse_whole=False, skip=skip,
                                                 inline_error=inline_error)
            self.stats.faults["inline_error"] += injected
        else:
            out, plan, runs, _ = _compile(data, kind, refuse_whole=True)
            return await self._transaction(out, runs, db, b64)
        pool = self.pools[db]
        replies = await pool.call("".join(out).encode("utf-8"), runs, not b64) if runs else []
        self.stats.commands += runs
        self.stats.db_commands[db] += runs
        if kind == "command":
            return self._single(replies[0], b64)
        return 200, _dumps(_results(replies, plan, b64))

    async def _transaction(self, out: list[str], runs: int, db: int, b64: bool) -> tuple[int, bytes]:
        payload = "*1\r\n$5\r\nMULTI\r\n" + "".join(out) + "*1\r\n$4\r\nEXEC\r\n"
        replies = await self.pools[db].call(payload.encode("utf-8"), runs + 2, not b64)
        for queued in replies[1:-1]:
            if queued.__class__ is _ReplyError:  # EXEC answers EXECABORT: nothing ran
                return 400, _error_body(_error_text(queued))
        result = replies[-1]
        if result.__class__ is _ReplyError:
            return 400, _error_body(_error_text(result))
        self.stats.commands += runs
        self.stats.db_commands[db] += runs
        return 200, _dumps(_results(result, None, b64))

    async def _run_path(
        self, scope: dict, method: str, body: bytes, query: list, db: int, b64: bool
    ) -> tuple[int, bytes]:
        self.stats.kinds["command"] += 1
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        segments = raw.split(b"/")[1:]
        if len(segments) > 1 and segments[-1] == b"":
            segments.pop()
        args = [unquote_to_bytes(s) for s in segments]
        if method in _BODY_METHODS and body:
            args.append(body)
        for key, value in query:
            if key == b"_token":
                continue
            args.append(key)
            if value:
                args.append(value)
        name = args[0].decode("utf-8", "replace")
        policy = _policies.get(name)
        if policy is None:
            policy = _policy(name)
        if policy is _CHECK:
            checked = _check(args)
            if isinstance(checked, str):
                raise _BadRequest(checked)
            args = checked
        elif policy is not _PASS:
            raise _BadRequest(policy)  # type: ignore[arg-type]
        replies = await self.pools[db].call(_encode_bytes_command(args), 1, not b64)
        self.stats.commands += 1
        self.stats.db_commands[db] += 1
        return self._single(replies[0], b64)

    @staticmethod
    def _single(reply: Any, b64: bool) -> tuple[int, bytes]:
        if reply.__class__ is _ReplyError:
            return 400, _error_body(_error_text(reply))
        return 200, _dumps({"result": _b64(reply) if b64 else reply})

    async def _inject(self, fault: str | int, scope: dict, receive: Any, send: Any) -> None:
        faults = self.stats.faults
        if fault == "drop":
            faults["drop"] += 1
            drop = scope.get("extensions", {}).get("pgpulse.drop")
            if drop is not None:
                drop()
            else:  # a server without our protocol hook: start a response and cut it short
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"1000")]})
            return
        if fault == "hang":
            faults["hang"] += 1
            await self._hang(receive)
            drop = scope.get("extensions", {}).get("pgpulse.drop")
            if drop is not None:
                drop()
            return
        faults["error"] += 1
        await self._respond(send, int(fault), _error_body(f"ERR devserver injected HTTP {fault}"))

    async def _hang(self, receive: Any) -> None:
        """Wait until the client gives up or the server stops."""
        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        assert self.stopping is not None
        waiters = [asyncio.ensure_future(client_gone()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # admin

    async def _admin(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            status, payload = await self._admin_request(scope, receive)
        except _Reply as reply:
            status, payload = reply.status, reply.body
        if status == 0:
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})

    async def _admin_request(self, scope: dict, receive: Any) -> tuple[int, bytes]:
        if self.admin_token is None:
            return 404, _error_body("ERR not found")
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        given = auth[7:].strip().decode("utf-8", "replace") if auth[:7].lower() == b"bearer " else None
        if given != self.admin_token:
            return 401, _error_body("ERR invalid or missing admin token")
        content_length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        body = await self._read_body(receive, content_length)
        if body is None:
            return 0, b""
        route, method = scope["path"].rstrip("/"), scope["method"]
        status, payload = 200, b""
        if route == "/_admin/faults":
            if method == "GET":
                payload = _dumps(self.faults.describe())
            elif method in _BODY_METHODS:
                try:
                    self.faults.install(json.loads(body or b"null"))
                except (ValueError, RecursionError) as exc:
                    status, payload = 400, _error_body(f"ERR {exc}")
                else:
                    payload = _dumps(self.faults.describe())
            elif method == "DELETE":
                self.faults.clear()
                payload = _dumps(self.faults.describe())
            else:
                status, payload = 405, _error_body("ERR use GET, POST, PUT or DELETE")
        elif route == "/_admin/stats":
            if method == "GET":
                payload = _dumps(self.stats.as_dict())
            elif method == "DELETE":
                self.stats.reset()
                payload = _dumps(self.stats.as_dict())
            else:
                status, payload = 405, _error_body("ERR use GET or DELETE")
        else:
            status, payload = 404, _error_body("ERR not found")
        return status, payload


# -- serving ------------------------------------------------------------------------


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

            self.scope.setdefault("extensions", {})["pgpulse.drop"] = drop  # type: ignore[typeddict-item]

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
    target = _RedisTarget.parse(redis_url)
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


# -- a managed subprocess for tests, benchmarks and the demo ------------------------


class DevServer:
    """Run `python -m relay.devserver` in a subprocess and drive its admin API."""

    def __init__(
        self,
        redis_url: str,
        tokens: dict[str, int],
        admin_token: str | None = "admin-secret",
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.redis_url = redis_url
        self.tokens = dict(tokens)
        self.admin_token = admin_token
        self.host = host
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.proc_returncode: int | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "DevServer":
        import httpx

        from relay.embedded import free_port

        if self.proc is not None and self.proc.poll() is None:
            return self  # already running
        if self.port is None:
            self.port = free_port()
        args = [sys.executable, "-m", "relay.devserver", "--host", self.host,
                "--port", str(self.port), "--redis-url", self.redis_url]
        for token, db in self.tokens.items():
            args += ["--token", f"{token}={db}"]
        if self.admin_token:
            args += ["--admin-token", self.admin_token]
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        probe, expected = ("/_admin/stats", 200) if self.admin_token else ("/", 401)
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    message = self._log_tail()
                    self.stop()
                    raise DevServerError(f"devserver exited with {self.proc_returncode}: {message}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + probe, headers=headers).status_code == expected:
                        return self
                if time.monotonic() > deadline:
                    message = self._log_tail()
                    self.stop()
                    raise DevServerError(f"devserver did not answer within {timeout:g} s: {message}")
                time.sleep(0.05)

    def _log_tail(self, lines: int = 5) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc_returncode = self.proc.returncode
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _admin(self, method: str, path: str, body: Any = None) -> dict:
        import httpx

        if not self.admin_token:
            raise DevServerError("this DevServer was started without an admin token")
        response = httpx.request(method, self.url + path, json=body, timeout=10.0,
                                 headers={"Authorization": f"Bearer {self.admin_token}"})
        if response.status_code != 200:
            raise DevServerError(f"admin {method} {path} answered {response.status_code}: {response.text}")
        return response.json()

    def set_faults(self, spec: dict, tokens: list[str] | None = None) -> dict:
        """Install a fault rule (see the module docstring), for `tokens` or for all."""
        body = dict(spec)
        if tokens is not None:
            body["tokens"] = list(tokens)
        return self._admin("POST", "/_admin/faults", body)

    def clear_faults(self) -> dict:
        return self._admin("DELETE", "/_admin/faults")

    def stats(self) -> dict:
        return self._admin("GET", "/_admin/stats")

    def reset_stats(self) -> dict:
        return self._admin("DELETE", "/_admin/stats")

    def __enter__(self) -> "DevServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay.devserver",
        description="An Upstash-compatible Redis REST server in front of a real redis-server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN[=DB]",
                        help="a REST token and the Redis database it maps to (repeatable)")
    parser.add_argument("--admin-token", default=None,
                        help="enables the /_admin fault-injection and stats API")
    options = parser.parse_args(argv)
    try:
        serve(options.host, options.port, options.redis_url, parse_token_args(options.token),
              options.admin_token)
    except PgPulseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
