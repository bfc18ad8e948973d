"""Local HTTP check targets for the demo and the benchmarks: one asyncio server in its own
thread, one request per connection (as checks make them), answering by path:

- `/ok` 200; `?ms=N` answers after N ms; `/status/NNN` with that status;
- `/flaky` 503 while the target is set down, else 200;
- `?s=<unix seconds>`: the job's scheduled_for, so the server can record execution lag
  (arrival − scheduled_for) without trusting the worker's own account.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from urllib.parse import parse_qs, urlsplit

_REASONS = {200: b"OK", 503: b"Service Unavailable"}


class LocalTargets:
    """Starts on enter, stops on exit. `lags` (seconds) and `hits` are read from any thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.down = False  # /flaky answers 503 while set
        self.hits = 0
        self.lags: list[float] = []  # arrival − scheduled_for of requests that carried ?s=
        self.by_path: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def url(self, path: str = "/ok") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> LocalTargets:
        self._thread = threading.Thread(target=self._serve, name="local-targets", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local targets did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0, backlog=4096)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived = time.time()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        except ConnectionError:
            return
        target = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.hits += 1
        self.by_path[parts.path] = self.by_path.get(parts.path, 0) + 1
        if "s" in query:
            with contextlib.suppress(ValueError):
                self.lags.append(arrived - float(query["s"]))
        if "ms" in query:
            with contextlib.suppress(ValueError):
                await asyncio.sleep(float(query["ms"]) / 1000)
        status = 200
        if parts.path.startswith("/status/"):
            with contextlib.suppress(ValueError):
                status = int(parts.path.rsplit("/", 1)[1])
        elif parts.path == "/flaky" and self.down:
            status = 503
        body = b"ok\n"
        reason = _REASONS.get(status, b"Status")
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, reason, len(body), body)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()
