"""One Redis ACL user per database: what keeps each token inside its own database.

A pooled connection SELECTs its database, then logs in as that database's tenant user.
The tenant user may run every data command on every key of the database it is in, but
nothing that reaches another database or state shared by all of them: no SELECT (also
not from a script: `redis.call` is checked against the caller's ACL), SWAPDB, MOVE, COPY
(its DB option), FLUSHALL, SCRIPT FLUSH/KILL, FUNCTION/FCALL (libraries are server-wide),
SLOWLOG, INFO, CLIENT, CONFIG, pub/sub (channels are server-wide) or any admin command.
AUTH and HELLO escape ACL checks in Redis; the protocol layer refuses them instead, and
scripts cannot call them.

The users are named `pgpulse-devserver-<random>-db<N>` with random passwords, made when
the server starts and deleted when it stops; the dev server's own --redis-url login must
be allowed `ACL SETUSER` (Redis 6 or newer).
"""

from __future__ import annotations

import contextlib
import secrets

from relay.devserver.redis import RedisTarget, open_connection

TENANT_RULES = (
    "reset",
    "on",
    "~*",
    "resetchannels",
    "+@all",
    "-@admin",
    "-@dangerous",
    "-@pubsub",
    # per-database commands that @dangerous also lists
    "+flushdb",
    "+keys",
    "+sort",
    "+sort_ro",
    "+restore",
    # reach another database or what all databases share
    "-select",
    "-swapdb",
    "-move",
    "-copy",
    "-migrate",
    "-flushall",
    "-script|flush",
    "-script|kill",
    "-script|debug",
    "-function",
    "-fcall",
    "-fcall_ro",
    "-memory",
    "+memory|usage",
    "-client",
    "-readonly",
    "-readwrite",
)


class Tenants:
    """The tenant users of one dev server: {database: (user, password)}."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.prefix = f"pgpulse-devserver-{secrets.token_hex(4)}"
        self.logins: dict[int, tuple[str, str]] = {}

    async def create(self, dbs: list[int]) -> dict[int, tuple[str, str]]:
        logins = {db: (f"{self.prefix}-db{db}", secrets.token_hex(32)) for db in dbs}
        await self._set_users(logins)
        self.logins = logins
        return logins

    async def restore(self) -> None:
        """Makes the users again (same passwords): a restarted redis-server lost them."""
        await self._set_users(self.logins)

    async def _set_users(self, logins: dict[int, tuple[str, str]]) -> None:
        setup = [
            [
                b"ACL",
                b"SETUSER",
                user.encode(),
                *(r.encode() for r in TENANT_RULES),
                b">" + password.encode(),
            ]
            for user, password in logins.values()
        ]
        conn = await open_connection(
            self.target,
            setup,
            "the per-token users (the dev server needs Redis 6+ and a login allowed ACL SETUSER)",
        )
        conn.transport.close()  # type: ignore[union-attr]

    async def drop(self) -> None:
        """Deletes the users (best effort: a server already gone keeps nothing anyway)."""
        if not self.logins:
            return
        users = [user.encode() for user, _ in self.logins.values()]
        with contextlib.suppress(ConnectionError, OSError):
            conn = await open_connection(self.target, [[b"ACL", b"DELUSER", *users]])
            conn.transport.close()  # type: ignore[union-attr]
        self.logins = {}
