"""`--strict-script-keys`: a script may touch only the keys passed in its KEYS.

Upstash documents that every key a script touches should arrive through KEYS: a key built
inside the script may be read from disk while the script holds its lock, and a script with
the `allow-key-locking` flag is refused outright when it touches one (Redis Cluster refuses
them too). redis-server does not check it, so the dev server does: each script it is given
(EVAL, EVAL_RO, SCRIPT LOAD) runs with a prologue that checks the keys of every
`redis.call` / `redis.pcall` (as `COMMAND GETKEYS` names them) against KEYS and fails the
script with `ERR script tried accessing undeclared key: ...` otherwise.

Clients keep the script's own SHA1: SCRIPT LOAD answers it, EVALSHA and SCRIPT EXISTS are
mapped to the SHA1 of the text Redis actually runs. The prologue sits on the script's first
line (after a `#!` line), so the line numbers of errors stay the script's own.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

PROLOGUE = (
    "local __pgpulse_redis, __pgpulse_declared = redis, {} "
    "for _, k in ipairs(KEYS) do __pgpulse_declared[k] = true end "
    "local function __pgpulse_check(...) "
    "local keys = __pgpulse_redis.pcall('COMMAND', 'GETKEYS', ...) "
    "if type(keys) == 'table' and not keys.err then for _, key in ipairs(keys) do "
    "if not __pgpulse_declared[key] then error({err = 'ERR script tried accessing undeclared "
    "key: ' .. string.sub(key, 1, 120) .. ' (every key a script touches must be passed in "
    "KEYS: devserver --strict-script-keys)'}) end end end end "
    "local redis = setmetatable({"
    "call = function(...) __pgpulse_check(...) return __pgpulse_redis.call(...) end, "
    "pcall = function(...) __pgpulse_check(...) return __pgpulse_redis.pcall(...) end"
    "}, {__index = __pgpulse_redis}); "
)
_MOST_SCRIPTS = 10_000  # clients choose the scripts: the map stays bounded


def _sha1(text: str | bytes) -> str:
    return hashlib.sha1(text if isinstance(text, bytes) else text.encode("utf-8")).hexdigest()


def guarded(text: str) -> str:
    """The script with the prologue on its first line (after a `#!` shebang line)."""
    if text.startswith("#!"):
        head, newline, body = text.partition("\n")
        return head + newline + PROLOGUE + body
    return PROLOGUE + text


class ScriptKeyGuard:
    """Rewrites the script commands of one dev server and remembers which SHA1 a client
    knows (its script's) stands for which one Redis runs (the guarded script's)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, str] = OrderedDict()  # client's SHA1 -> Redis's SHA1
        self._client_sha: dict[str, str] = {}  # Redis's SHA1 -> client's SHA1

    def _remember(self, text: Any) -> tuple[str, str]:
        source = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
        wrapped = guarded(source)
        mine, theirs = _sha1(text), _sha1(wrapped.encode("utf-8", "surrogateescape"))
        self._runs[mine] = theirs
        self._runs.move_to_end(mine)
        self._client_sha[theirs] = mine
        while len(self._runs) > _MOST_SCRIPTS:
            _, dropped = self._runs.popitem(last=False)
            self._client_sha.pop(dropped, None)
        return mine, wrapped

    def rewrite(self, cmd: list) -> list:
        """The command to send instead (the same list when there is nothing to change)."""
        name = _word(cmd[0])
        if name in ("EVAL", "EVAL_RO") and len(cmd) > 1:
            _, wrapped = self._remember(cmd[1])
            return [cmd[0], _like(cmd[1], wrapped), *cmd[2:]]
        if name in ("EVALSHA", "EVALSHA_RO") and len(cmd) > 1:
            return [cmd[0], self._runs_as(cmd[1]), *cmd[2:]]
        if name == "SCRIPT" and len(cmd) > 1:
            sub = _word(cmd[1])
            if sub == "LOAD" and len(cmd) == 3:
                _, wrapped = self._remember(cmd[2])
                return [cmd[0], cmd[1], _like(cmd[2], wrapped)]
            if sub == "EXISTS":
                return [cmd[0], cmd[1], *(self._runs_as(sha) for sha in cmd[2:])]
        return cmd

    def _runs_as(self, sha: Any) -> Any:
        theirs = self._runs.get(_word(sha).lower())
        return sha if theirs is None else _like(sha, theirs)

    @staticmethod
    def is_load(cmd: Any) -> bool:
        return (
            isinstance(cmd, list)
            and len(cmd) == 3
            and _word(cmd[0]) == "SCRIPT"
            and _word(cmd[1]) == "LOAD"
        )

    def client_sha(self, reply: Any) -> Any:
        """SCRIPT LOAD's answer as the client expects it: its own script's SHA1."""
        if isinstance(reply, (str, bytes)):
            mine = self._client_sha.get(_word(reply).lower())
            if mine is not None:
                return _like(reply, mine)
        return reply


def _word(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("latin-1").upper()
    return str(arg).upper()


def _like(original: Any, text: str) -> Any:
    """`text` as the same type as `original` (the path form carries bytes)."""
    return text.encode("utf-8", "surrogateescape") if isinstance(original, bytes) else text
