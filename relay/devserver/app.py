"""The raw ASGI application: HTTP in, Redis calls, JSON out; faults and the admin API."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import random
from typing import Any

from relay.devserver.faults import FaultRule, Faults
from relay.devserver.protocol import (
    BadRequest,
    compile_commands,
    dumps,
    encode_command,
    error_body,
    multi_exec,
    parse_json_body,
    path_command,
    query_pairs,
    results,
    single_result,
    transaction_result,
)
from relay.devserver.redis import RedisPool, RedisTarget
from relay.devserver.scripts import ScriptKeyGuard
from relay.devserver.stats import Stats
from relay.devserver.tenants import Tenants
from relay.errors import ConfigError

MAX_REQUEST_BYTES = 10 * 1024 * 1024
# The ASGI scope extension through which the HTTP protocol lets the app cut a connection.
DROP_EXTENSION = "pgpulse.drop"
_UNAUTHORIZED = (
    b'{"error":"WRONGPASS invalid or missing auth token. See '
    b'https://docs.upstash.com/redis/troubleshooting/http_unauthorized for details."}'
)
_METHOD_NOT_ALLOWED = b'{"error":"ERR method not allowed, use HEAD, GET, POST or PUT"}'
_ALLOWED_METHODS = frozenset({"HEAD", "GET", "POST", "PUT"})
_BODY_METHODS = frozenset({"POST", "PUT"})
_ADMIN_PREFIX = "/_admin"
_log = logging.getLogger("pgpulse.devserver")


class _Reply(Exception):
    """Answer now with this status and JSON body."""

    def __init__(self, status: int, body: bytes, close: bool = False) -> None:
        super().__init__(status)
        self.status, self.body, self.close = status, body, close


def _size_error(actual: int) -> bytes:
    return error_body(
        f"ERR max request size exceeded. Limit: {MAX_REQUEST_BYTES} bytes, Actual: {actual} bytes"
    )


class DevServerApp:
    """The raw ASGI application behind `serve`."""

    def __init__(
        self,
        redis: RedisTarget,
        tokens: dict[str, int],
        admin_token: str | None = None,
        faults: dict | None = None,
        redis_compat: str | None = None,
        strict_script_keys: bool = False,
    ) -> None:
        self.redis = redis
        self.tokens = dict(tokens)
        self._token_dbs = [(t.encode("utf-8"), db) for t, db in self.tokens.items()]
        self.admin_token = admin_token
        self.faults = Faults(self.tokens)
        if faults:
            try:
                self.faults.install(faults)
            except ValueError as exc:
                raise ConfigError(f"faults: {exc}") from None
        self.stats = Stats()
        self.pools: dict[int, RedisPool] = {}
        self.tenants = Tenants(redis, redis_compat)
        self.scripts = ScriptKeyGuard() if strict_script_keys else None
        self.startup_error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self._sync_prefix = "%08x" % random.getrandbits(32)
        self._sync = itertools.count(1)

    # lifecycle

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        dbs = sorted(set(self.tokens.values()))
        logins = await self.tenants.create(dbs)
        for db in dbs:
            pool = RedisPool(self.redis, db, login=logins[db], restore_login=self.tenants.restore)
            await pool.warm()
            self.pools[db] = pool

    async def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.close()
        await self.tenants.drop()

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
        self,
        send: Any,
        status: int,
        body: bytes,
        *,
        sync: bool = False,
        close: bool = False,
        extra: tuple = (),
    ) -> None:
        self.stats.responses[status] += 1
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if sync:
            headers.append(
                (b"upstash-sync-token", f"{self._sync_prefix}-{next(self._sync)}".encode("ascii"))
            )
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
        if path.startswith(_ADMIN_PREFIX) and (
            len(path) == len(_ADMIN_PREFIX) or path[len(_ADMIN_PREFIX)] == "/"
        ):
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
                await self._respond(
                    send,
                    500,
                    error_body(f"ERR devserver internal error ({type(exc).__name__})"),
                    close=True,
                )

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
        query = query_pairs(query_string) if query_string else []
        token = None
        if auth is not None and auth[:7].lower() == b"bearer ":
            token = auth[7:].strip().decode("utf-8", "replace")
        elif query:
            for key, value in query:
                if key == b"_token":
                    token = value.decode("utf-8", "replace")
                    break
        db = self._db_of(token) if token is not None else None
        if db is None or token is None:
            raise _Reply(401, _UNAUTHORIZED)
        stats = self.stats
        stats.db_requests[db] += 1
        if response_format is not None and response_format.lower() != b"json":
            if response_format.lower() == b"resp2":
                raise _Reply(
                    400,
                    error_body(
                        "ERR the devserver does not implement Upstash-Response-Format: resp2"
                    ),
                )
            raise _Reply(400, error_body("ERR invalid Upstash-Response-Format, use json or resp2"))
        b64 = encoding is not None and encoding.lower() == b"base64"

        body = await self._read_body(receive, content_length)
        if body is None:
            return

        rule = (
            self.faults.rule_for(token) if (self.faults.default or self.faults.by_token) else None
        )
        if rule is not None and (too_large := rule.oversized(len(body))):
            raise _Reply(400, error_body(too_large))
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
        except BadRequest as exc:
            status, payload = 400, error_body(str(exc))
        except ConnectionError as exc:
            status, payload = 503, error_body(f"ERR devserver: {exc}")
        if len(payload) > MAX_REQUEST_BYTES:
            status, payload = 400, _size_error(len(payload))
        if fault is not None:  # phase "after": the commands ran, the answer is lost
            await self._inject(fault, scope, receive, send)
            return
        await self._respond(send, status, payload, sync=True)

    async def _run_json(
        self, kind: str, body: bytes, db: int, b64: bool, rule: FaultRule | None
    ) -> tuple[int, bytes]:
        self.stats.kinds[kind] += 1
        data = parse_json_body(kind, body)
        scripts = self.scripts
        if kind == "command":
            out, plan, runs, _ = compile_commands([data], kind, refuse_whole=True, scripts=scripts)
        elif kind == "pipeline":
            skip = None
            inline_error = ""
            if rule is not None and rule.injects_inline:
                skip = rule.draw_inline_errors(self.faults.rng, data)
                inline_error = rule.inline_error
            out, plan, runs, injected = compile_commands(
                data,
                kind,
                refuse_whole=False,
                skip=skip,
                inline_error=inline_error,
                scripts=scripts,
            )
            self.stats.faults["inline_error"] += injected
        else:
            out, plan, runs, _ = compile_commands(data, kind, refuse_whole=True, scripts=scripts)
            return await self._transaction(data, out, runs, db, b64)
        pool = self.pools[db]
        replies = await pool.call("".join(out).encode("utf-8"), runs, not b64) if runs else []
        self.stats.count_commands(db, runs)
        if scripts is not None:
            self._client_shas([data] if kind == "command" else data, plan, replies)
        if kind == "command":
            reply = rule.shift_time(data, replies[0]) if rule is not None else replies[0]
            return single_result(reply, b64)
        payload = dumps(results(replies, plan, b64))
        if rule is not None and (mangled := rule.malform(self.faults.rng, payload)):
            self.stats.faults["malformed"] += 1
            return 200, mangled
        return 200, payload

    def _client_shas(self, cmds: list, plan: list | None, replies: list) -> None:
        """SCRIPT LOAD answers the SHA1 of the client's script, not the guarded one's."""
        ran = 0
        for index, cmd in enumerate(cmds):
            if plan is not None and plan[index] is not None:
                continue  # refused: it has no reply
            if ScriptKeyGuard.is_load(cmd) and ran < len(replies):
                replies[ran] = self.scripts.client_sha(replies[ran])  # type: ignore[union-attr]
            ran += 1

    async def _transaction(
        self, data: list, out: list[str], runs: int, db: int, b64: bool
    ) -> tuple[int, bytes]:
        replies = await self.pools[db].call(multi_exec(out), runs + 2, not b64)
        if self.scripts is not None and isinstance(replies[-1], list):
            self._client_shas(data, None, replies[-1])
        status, payload = transaction_result(replies, b64)
        if status == 200:
            self.stats.count_commands(db, runs)
        return status, payload

    async def _run_path(
        self, scope: dict, method: str, body: bytes, query: list, db: int, b64: bool
    ) -> tuple[int, bytes]:
        self.stats.kinds["command"] += 1
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        args = path_command(raw, body if method in _BODY_METHODS else b"", query, self.scripts)
        replies = await self.pools[db].call(encode_command(args), 1, not b64)
        self.stats.count_commands(db, 1)
        if self.scripts is not None:
            self._client_shas([args], None, replies)
        return single_result(replies[0], b64)

    # faults

    async def _inject(self, fault: str | int, scope: dict, receive: Any, send: Any) -> None:
        faults = self.stats.faults
        drop = scope.get("extensions", {}).get(DROP_EXTENSION)
        if fault == "drop":
            faults["drop"] += 1
            if drop is not None:
                drop()
            else:  # a server without our protocol hook: start a response and cut it short
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-length", b"1000")],
                    }
                )
            return
        if fault == "hang":
            faults["hang"] += 1
            await self._hang(receive)
            if drop is not None:
                drop()
            return
        faults["error"] += 1
        await self._respond(send, int(fault), error_body(f"ERR devserver injected HTTP {fault}"))

    async def _hang(self, receive: Any) -> None:
        """Wait until the client gives up or the server stops."""

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        assert self.stopping is not None
        waiters = [
            asyncio.ensure_future(client_gone()),
            asyncio.ensure_future(self.stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # admin

    def _db_of(self, token: str) -> int | None:
        """The database of a token, or None. Constant time, as for the admin token: every
        known token is compared (no dict lookup, no early exit), so the time taken says
        nothing about how much of a guess was right."""
        given = token.encode("utf-8")
        found = None
        for known, db in self._token_dbs:
            if hmac.compare_digest(known, given):
                found = db
        return found

    async def _admin(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            status, payload = await self._admin_request(scope, receive)
        except _Reply as reply:
            status, payload = reply.status, reply.body
        if status == 0:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(payload)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _admin_request(self, scope: dict, receive: Any) -> tuple[int, bytes]:
        """Status and body of an admin request; status 0 when the client left."""
        if self.admin_token is None:
            return 404, error_body("ERR not found")
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
        # constant time: the comparison's duration says nothing about the token
        if not hmac.compare_digest(given, self.admin_token.encode("utf-8")):
            return 401, error_body("ERR invalid or missing admin token")
        content_length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        body = await self._read_body(receive, content_length)
        if body is None:
            return 0, b""
        return self._admin_route(scope["path"].rstrip("/"), scope["method"], body)

    def _admin_route(self, route: str, method: str, body: bytes) -> tuple[int, bytes]:
        if route == "/_admin/faults":
            if method == "GET":
                return 200, dumps(self.faults.describe())
            if method in _BODY_METHODS:
                try:
                    self.faults.install(json.loads(body or b"null"))
                except (ValueError, RecursionError) as exc:
                    return 400, error_body(f"ERR {exc}")
                return 200, dumps(self.faults.describe())
            if method == "DELETE":
                self.faults.clear()
                return 200, dumps(self.faults.describe())
            return 405, error_body("ERR use GET, POST, PUT or DELETE")
        if route == "/_admin/stats":
            if method == "GET":
                return 200, dumps(self.stats.as_dict())
            if method == "DELETE":
                self.stats.reset()
                return 200, dumps(self.stats.as_dict())
            return 405, error_body("ERR use GET or DELETE")
        return 404, error_body("ERR not found")
