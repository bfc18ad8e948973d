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

With `--redis-compat 6.2` the users may also not run the commands Redis added after 6.2
(Upstash documents compatibility with Redis 6.2): a direct call is refused with NOPERM,
a script's `redis.call` with an error. Options added later (EXPIRE's NX/XX/GT/LT, BITCOUNT
BIT) are not caught; scripts written for 6.2 avoid them.
"""

from __future__ import annotations

import contextlib
import secrets

from relay.devserver.protocol import encode_command
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


# Commands Redis added after 6.2 (7.0: LMPOP, SINTERCARD, EXPIRETIME, *_RO, LCS,
# functions, sharded pub/sub; 7.2: WAITAOF; 7.4: hash-field expiry; 8.0: HGETDEL, HGETEX,
# HSETEX, vector sets): refused under --redis-compat 6.2 where this redis-server has them.
NEWER_THAN_6_2 = (
    "lmpop blmpop zmpop bzmpop sintercard zintercard expiretime pexpiretime lcs "
    "eval_ro evalsha_ro sort_ro bitfield_ro fcall fcall_ro function spublish ssubscribe "
    "sunsubscribe waitaof hexpire hpexpire hexpireat hpexpireat httl hpttl hexpiretime "
    "hpexpiretime hpersist hgetdel hgetex hsetex vadd vcard vdim vemb vgetattr vinfo vlinks "
    "vrandmember vrem vsetattr vsim"
).split()


class Tenants:
    """The tenant users of one dev server: {database: (user, password)}."""

    def __init__(self, target: RedisTarget, compat: str | None = None) -> None:
        self.target = target
        self.compat = compat
        self.denied: list[str] = []  # commands refused for compat (those this server has)
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

    async def _newer_commands(self) -> list[str]:
        """The commands of NEWER_THAN_6_2 that this redis-server knows (ACL SETUSER refuses
        a rule naming a command it does not know)."""
        conn = await open_connection(self.target, what="the command table")
        try:
            (info,) = await conn.call(
                encode_command([b"COMMAND", b"INFO", *(c.encode() for c in NEWER_THAN_6_2)]),
                1,
                True,
            )
        finally:
            conn.transport.close()  # type: ignore[union-attr]
        return [name for name, known in zip(NEWER_THAN_6_2, info) if known]

    async def _set_users(self, logins: dict[int, tuple[str, str]]) -> None:
        if self.compat == "6.2" and not self.denied:
            self.denied = await self._newer_commands()
        rules = [*TENANT_RULES, *(f"-{name}" for name in self.denied)]
        setup = [
            [
                b"ACL",
                b"SETUSER",
                user.encode(),
                *(r.encode() for r in rules),
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
