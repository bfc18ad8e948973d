"""The Upstash REST protocol in RESP terms: requests to commands, replies to JSON.

A request's commands come from a JSON body (`["SET", "k", "v"]`, or an array of them)
or from the path form (`/set/k/v?EX=100`). Each command is checked, then written as
RESP for redis-server; its reply is written back as `{"result": ...}` or
`{"error": ...}`, optionally base64-encoded.

Refused with `ERR Command is not available: 'BLPOP'. See https://upstash.com/docs/redis/
overall/rediscompatibility for details`, as Upstash's REST API does: blocking commands
(BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD/XREADGROUP
with BLOCK, WAIT), connection commands other than PING and ECHO (SELECT, AUTH, CLIENT,
...), MULTI/EXEC/WATCH as commands, SUBSCRIBE and MONITOR, and whatever would let one
token reach another token's database or what all databases of one redis-server share
(MOVE, SWAPDB, COPY, SCRIPT FLUSH/KILL, FUNCTION, SLOWLOG, INFO, PUBLISH, ...). FLUSHALL
is rewritten to FLUSHDB. Redis's own "unknown command" errors are rewritten into the same
text. Scripts are held in by the per-database ACL users of `relay.devserver.tenants`.
"""

from __future__ import annotations

import binascii
import itertools
import json
import operator
from typing import Any
from urllib.parse import unquote_to_bytes

import hiredis

_COMPAT_URL = "https://upstash.com/docs/redis/overall/rediscompatibility"
_ReplyError = hiredis.ReplyError


class BadRequest(Exception):
    """The request is malformed or refused as a whole: HTTP 400 with this message."""


# -- command policy: run, rewrite or refuse -----------------------------------------


def _not_available(name: str) -> str:
    return f"ERR Command is not available: '{name.upper()}'. See {_COMPAT_URL} for details"


# Not offered by Upstash's REST API, or able to break the connection pool or reach
# another token's database.
_REFUSED = frozenset(
    {
        # blocking
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
        # connection: only PING and ECHO are offered
        "AUTH",
        "HELLO",
        "SELECT",
        "QUIT",
        "RESET",
        "CLIENT",
        "READONLY",
        "READWRITE",
        "ASKING",
        # transactions go through /multi-exec
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        # pub/sub: only PUBLISH and PUBSUB
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        # server and replication, other databases
        "MONITOR",
        "SYNC",
        "PSYNC",
        "REPLCONF",
        "REPLICAOF",
        "SLAVEOF",
        "FAILOVER",
        "SHUTDOWN",
        "DEBUG",
        "CONFIG",
        "MODULE",
        "ACL",
        "CLUSTER",
        "SWAPDB",
        "MOVE",
        "MIGRATE",
        "COPY",
        # state every database shares: another token's commands, scripts, channels, counters
        "SLOWLOG",
        "LATENCY",
        "INFO",
        "ROLE",
        "LASTSAVE",
        "SAVE",
        "BGSAVE",
        "BGREWRITEAOF",
        "FUNCTION",
        "FCALL",
        "FCALL_RO",
        "PUBLISH",
        "SPUBLISH",
        "PUBSUB",
    }
)
_SPECIAL = frozenset({"FLUSHALL", "XREAD", "XREADGROUP", "SCRIPT", "MEMORY"})
_PASS = object()  # run as is
_CHECK = object()  # depends on the arguments: see _check
_policies: dict[str, object] = {}


def _policy(name: str) -> object:
    """_PASS, _CHECK or the refusal message, cached by the name as the client spelt it."""
    policy = _policies.get(name)
    if policy is not None:
        return policy
    upper = name.upper()
    if upper in _REFUSED:
        policy = _not_available(name)
    elif upper in _SPECIAL:
        policy = _CHECK
    else:
        policy = _PASS
    if len(_policies) < 4096:  # bounded: clients choose the names
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
    if name == "SCRIPT" and words and words[0] in ("FLUSH", "KILL", "DEBUG"):
        return _not_available(f"SCRIPT {words[0]}")  # the script cache is server-wide
    if name == "MEMORY" and (not words or words[0] != "USAGE"):
        return _not_available(f"MEMORY {words[0] if words else ''}".strip())
    return cmd


# -- requests -----------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# Numbers keep the text the client wrote: Redis receives `100`, `1.5`, `1e3` verbatim.
_decode_json = json.JSONDecoder(
    parse_int=str, parse_float=str, parse_constant=_reject_constant
).decode


def parse_json_body(kind: str, body: bytes) -> list:
    """The non-empty JSON array of a "command", "pipeline" or "multi-exec" request."""
    what = "command" if kind == "command" else f"{kind} request"
    try:
        data = _decode_json(body.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise BadRequest(f"ERR failed to parse {what}: the body is not valid JSON") from None
    if data.__class__ is not list:
        raise BadRequest(f"ERR failed to parse {what}: the body must be a JSON array")
    if not data:
        raise BadRequest(f"ERR failed to parse {what}: it is empty")
    return data


def query_pairs(query: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        pairs.append(
            (unquote_to_bytes(key.replace(b"+", b" ")), unquote_to_bytes(value.replace(b"+", b" ")))
        )
    return pairs


def path_command(
    raw_path: bytes, body: bytes, query: list[tuple[bytes, bytes]], scripts: Any = None
) -> list[bytes]:
    """The checked command of a path-form request: segments, then body, then query
    (`scripts`: the dev server's ScriptKeyGuard, when it has one)."""
    segments = raw_path.split(b"/")[1:]
    if len(segments) > 1 and segments[-1] == b"":
        segments.pop()
    args = [unquote_to_bytes(s) for s in segments]
    if body:
        args.append(body)
    for key, value in query:
        if key == b"_token":
            continue
        args.append(key)
        if value:
            args.append(value)
    policy = _policy(args[0].decode("utf-8", "replace"))
    if policy is _CHECK:
        checked = _check(args)
        if isinstance(checked, str):
            raise BadRequest(checked)
        args = checked
    elif policy is not _PASS:
        raise BadRequest(policy)
    return args if scripts is None else scripts.rewrite(args)


# -- RESP encoding ------------------------------------------------------------------


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
        raise BadRequest(f"{where}: the command name must be a string")
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
                    raise BadRequest(f"{where}: argument {position} is not valid Unicode") from None
        elif kind is bool:
            arg = "true" if arg else "false"
            size = len(arg)
        else:
            raise BadRequest(
                f"{where}: argument {position} must be a string, a number or a boolean"
            )
        out.append(f"${size}\r\n{arg}\r\n")


def encode_command(args: list[bytes]) -> bytes:
    """One command of byte strings as RESP."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def multi_exec(out: list[str]) -> bytes:
    """Encoded commands wrapped in one MULTI ... EXEC block, to be written contiguously."""
    return ("*1\r\n$5\r\nMULTI\r\n" + "".join(out) + "*1\r\n$4\r\nEXEC\r\n").encode("utf-8")


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
    for name in set(map(_first, cmds)):
        if _policy(name) is not _PASS:
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


_SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "SCRIPT"})


def _names_a_script_command(cmds: list) -> bool:
    return any(
        cmd.__class__ is list and cmd and _text(cmd[0]).upper() in _SCRIPT_COMMANDS for cmd in cmds
    )


def compile_commands(
    cmds: list,
    kind: str,
    *,
    refuse_whole: bool,
    skip: set[int] | None = None,
    inline_error: str = "",
    scripts: Any = None,
) -> tuple[list[str], list | None, int, int]:
    """Validate and encode JSON commands (`scripts`: the dev server's ScriptKeyGuard, which
    rewrites script commands, when it has one).

    Returns the RESP text parts, the plan (None when every command runs, else one entry
    per command: None to run it, or the inline error it gets instead), how many commands
    run and how many got the injected inline error.
    """
    if not skip and (scripts is None or not _names_a_script_command(cmds)):
        text = _encode_fast(cmds)
        if text is not None:
            return [text], None, len(cmds), 0
    out: list[str] = []
    plan: list | None = None
    runs = injected = 0
    for index, cmd in enumerate(cmds):
        if cmd.__class__ is not list or not cmd:
            raise BadRequest(f"{_where(kind, index)}: a command must be a non-empty JSON array")
        mark = len(out)
        _encode_json_command(out, cmd, kind, index)
        policy = _policy(cmd[0])
        refusal = None
        checked = cmd
        if policy is not _PASS:
            if policy is _CHECK:
                found = _check(cmd)
                if isinstance(found, str):
                    refusal = found
                else:
                    checked = found
            else:
                refusal = policy  # type: ignore[assignment]  # neither sentinel: its text
        if refusal is None:
            if scripts is not None:
                checked = scripts.rewrite(checked)
            if checked is not cmd:
                del out[mark:]
                _encode_json_command(out, checked, kind, index)
        if refusal is None and skip and index in skip:
            refusal = inline_error
            injected += 1
        if refusal is not None:
            if refuse_whole:
                raise BadRequest(refusal)
            del out[mark:]
            if plan is None:
                plan = [None] * index
            plan.append(refusal)
            continue
        if plan is not None:
            plan.append(None)
        runs += 1
    return out, plan, runs, injected


# -- replies: Redis replies to Upstash JSON -----------------------------------------


def error_text(error: _ReplyError) -> str:
    """A Redis error as Upstash words it."""
    message = error.args[0] if error.args else str(error)
    prefix = "ERR unknown command '"
    if message.startswith(prefix):
        rest = message[len(prefix) :]
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
        return error_text(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_json_default, check_circular=False
).encode


def dumps(obj: Any) -> bytes:
    return _encode_json(obj).encode("utf-8")


def error_body(message: str) -> bytes:
    return dumps({"error": message})


def single_result(reply: Any, b64: bool) -> tuple[int, bytes]:
    """The HTTP status and body answering a single command."""
    if reply.__class__ is _ReplyError:
        return 400, error_body(error_text(reply))
    return 200, dumps({"result": _b64(reply) if b64 else reply})


def results(replies: list, plan: list | None, b64: bool) -> list[dict]:
    """The items answering a pipeline or transaction, refusals from the plan inline."""
    if plan is None:
        if b64:
            replies = [r if r.__class__ is _ReplyError else _b64(r) for r in replies]
        return [
            {"error": error_text(r)} if r.__class__ is _ReplyError else {"result": r}
            for r in replies
        ]
    items: list[dict] = []
    feed = iter(replies)
    for refusal in plan:
        if refusal is not None:
            items.append({"error": refusal})
            continue
        reply = next(feed)
        if reply.__class__ is _ReplyError:
            items.append({"error": error_text(reply)})
        else:
            items.append({"result": _b64(reply) if b64 else reply})
    return items


def transaction_result(replies: list, b64: bool) -> tuple[int, bytes]:
    """The HTTP status and body answering a MULTI ... EXEC block, from all its replies."""
    for queued in replies[1:-1]:
        if queued.__class__ is _ReplyError:  # EXEC answers EXECABORT: nothing ran
            return 400, error_body(error_text(queued))
    result = replies[-1]
    if result.__class__ is _ReplyError:
        return 400, error_body(error_text(result))
    return 200, dumps(results(result, None, b64))
