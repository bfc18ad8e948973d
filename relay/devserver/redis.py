"""Connections to redis-server: the address, one pipelined connection, a pool per database."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import hiredis

from relay.devserver.protocol import encode_command
from relay.errors import ConfigError

POOL_SIZE = 4  # connections per Redis database, opened on demand


class RedisTarget(NamedTuple):
    """Where redis-server listens (TCP or a unix socket) and how to log in."""

    host: str
    port: int
    path: str | None
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
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


class Refused(ConnectionError):
    """redis-server answered one step of opening a connection with an error."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step  # index into the steps that were sent


async def open_connection(
    target: RedisTarget, setup: Sequence[list[bytes]] = (), what: str = "redis-server"
) -> _RedisConnection:
    """A connection logged in with the target's credentials, then `setup` run on it in
    order; any refused step closes it and raises ConnectionError naming the command."""
    loop = asyncio.get_running_loop()
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
    hello.extend(setup)
    if not hello:
        return conn
    replies = await conn.call(b"".join(encode_command(c) for c in hello), len(hello), True)
    for step, (command, reply) in enumerate(zip(hello, replies)):
        if isinstance(reply, hiredis.ReplyError):
            conn.transport.close()  # type: ignore[union-attr]
            name = " ".join(part.decode() for part in command[: 2 if command[0] == b"ACL" else 1])
            raise Refused(
                f"redis-server refused {name} for {what}: {reply}", step - (len(hello) - len(setup))
            )
    return conn


class RedisPool:
    """A few connections to one Redis database, each SELECTed once when opened, then
    logged in as the database's tenant user (`login`), which may not SELECT again."""

    def __init__(
        self,
        target: RedisTarget,
        db: int,
        size: int = POOL_SIZE,
        login: tuple[str, str] | None = None,
        restore_login: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.target = target
        self.db = db
        self.size = size
        self.login = login
        self.restore_login = restore_login  # a restarted redis-server forgot the user
        self.conns: list[_RedisConnection] = []
        self.lock = asyncio.Lock()

    async def warm(self) -> None:
        """Open one connection now: an unreachable server or a missing database fails fast."""
        self.conns.append(await self._open())

    async def _open(self) -> _RedisConnection:
        setup = [
            [b"SELECT", str(self.db).encode()],
            [b"CLIENT", b"SETNAME", f"pgpulse-devserver-db{self.db}".encode()],
        ]
        if self.login is not None:  # last: the tenant user may neither SELECT nor CLIENT
            setup.append([b"AUTH", self.login[0].encode(), self.login[1].encode()])
        try:
            return await open_connection(self.target, setup, f"database {self.db}")
        except Refused as exc:
            if self.restore_login is None or exc.step != len(setup) - 1:
                raise
        await self.restore_login()
        return await open_connection(self.target, setup, f"database {self.db}")

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
        """Send RESP `payload` and wait for its `replies` replies (bytes when not `decode`)."""
        conn = await self._connection()
        return await conn.call(payload, replies, decode)

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        self.conns.clear()
