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
- Commands the REST API does not offer (blocking, connection and pub/sub commands,
  MULTI/EXEC as commands, whatever reaches another token's database or state all
  databases share) are refused with Upstash's text `ERR Command is not available:
  'BLPOP'. See ...`; FLUSHALL only flushes the token's own database. The list is in
  `relay.devserver.protocol`.
- Tenants: each token's connections log in as a Redis ACL user of its own database that
  may not SELECT, FLUSHALL, SCRIPT FLUSH, ... (`relay.devserver.tenants`), so scripts
  (`EVAL` with `redis.call('SELECT', ...)`) stay in their database too. The
  `--redis-url` login must be allowed `ACL SETUSER` (Redis 6+).
- `--redis-compat 6.2` refuses the commands Redis added after 6.2, in scripts too;
  `--strict-script-keys` fails a script that touches a key not passed in its KEYS
  (`relay.devserver.scripts`), as Upstash asks of scripts.
- Tokens and the admin token are best given by environment ($PGPULSE_DEVSERVER_TOKENS,
  whitespace-separated TOKEN[=DB]; $PGPULSE_DEVSERVER_ADMIN_TOKEN): a command line is
  visible to every user in `ps`.
- Not implemented: `Upstash-Response-Format: resp2` (answered with 400), the
  server-sent-events endpoints `/subscribe` and `/monitor`, read-only tokens.

Admin API (only with `--admin-token`; otherwise every `/_admin/...` path is 404)
------------------------------------------------------------------------------
All admin requests need `Authorization: Bearer <admin token>` (401 otherwise), are never
faulted and are not counted in the stats.

- `GET /_admin/faults` — the fault rules in force:
  `{"default": {...} | null, "scoped": [{"db": 1, "token_hint": "ab…", ...}]}`.
- `POST /_admin/faults` (or PUT) — install a rule; its fields are in
  `relay.devserver.faults`.
- `DELETE /_admin/faults` — remove every rule.
- `GET /_admin/stats` — the counters listed in `relay.devserver.stats`.
- `DELETE /_admin/stats` — reset the counters.

Modules
-------
- `protocol`: requests to RESP commands (checks and refusals), replies to JSON/base64.
- `redis`: the redis-server address, pipelined connections, a pool per database.
- `tenants`: the per-database ACL users.
- `scripts`: `--strict-script-keys`, the guard every script runs under.
- `faults`, `stats`: fault rules and their dice; the request counters.
- `app`: the ASGI application (`DevServerApp`): HTTP, auth, faults, the admin API.
- `options`: the command line both `pgpulse devserver` and `python -m relay.devserver` parse.
- `server`: `serve` under uvicorn, `main`.
- `launcher`: `DevServer`, the server as a subprocess for tests, benchmarks and the demo.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.devserver.app import MAX_REQUEST_BYTES, DevServerApp
    from relay.devserver.launcher import DevServer
    from relay.devserver.options import parse_token_args
    from relay.devserver.server import main, serve
    from relay.errors import DevServerError

# Each loaded on first use: `pgpulse` reads `options` for every command and should not pay
# for the server (asyncio, uvicorn), nor `python -m relay.devserver` for the launcher's psycopg.
_HOMES = {
    "MAX_REQUEST_BYTES": "relay.devserver.app",
    "DevServerApp": "relay.devserver.app",
    "DevServer": "relay.devserver.launcher",
    "parse_token_args": "relay.devserver.options",
    "main": "relay.devserver.server",
    "serve": "relay.devserver.server",
    "DevServerError": "relay.errors",
}
__all__ = [
    "MAX_REQUEST_BYTES",
    "DevServer",
    "DevServerApp",
    "DevServerError",
    "main",
    "parse_token_args",
    "serve",
]  # = _HOMES


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
