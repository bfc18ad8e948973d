"""A small async client for Upstash Redis's REST API: one keep-alive httpx client per
region, /pipeline requests, retries with exponential backoff and jitter (tenacity)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay

from relay.backoff import Backoff
from relay.config import Endpoint

# the publish errors live in relay.errors; imported here too for this client's callers
from relay.errors import (
    MalformedReply,
    PublishError,
    RequestRejected,
    TokenRefused,
    TransientError,
)
from relay.ops import metrics

# one request is retried after 50 ms, 100 ms ... at most 2 s (±50%), within the retry window
REQUEST_RETRY = Backoff(first=0.05, most=2.0, jitter=0.5)


# Errors that concern the database or the request, never one job, however many jobs the
# request carried: Upstash's quotas and limits (its troubleshooting pages: data size, the
# monthly and the older free tier's daily command quota, connections, request and record
# size), and Redis's "cannot write now" states (error codes). Upstash documents no text for
# its bandwidth and rate limits: any "max ... limit exceeded", quota, bandwidth or rate
# limit text counts. A job's own limit ("ERR max key size exceeded. Limit: ...") does not.
REGION_ERROR_TEXT = re.compile(
    r"db capacity quota exceeded"
    r"|max requests limit exceeded"
    r"|max daily request limit exceeded"
    r"|max concurrent connections exceeded"
    r"|max request size exceeded"
    r"|max single record size exceeded"
    r"|\bmax\b[^.]*\blimit exceeded"
    r"|\bquota exceeded"
    r"|\bbandwidth\b"
    r"|\brate ?limit"
    r"|\btoo many requests\b",
    re.IGNORECASE,
)
REGION_ERROR_CODES = (
    "OOM",
    "READONLY",
    "MISCONF",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


def is_region_error(message: str) -> bool:
    """Whether an error text concerns the whole region (see REGION_ERROR_TEXT)."""
    code = message.split(" ", 1)[0]
    return code in REGION_ERROR_CODES or REGION_ERROR_TEXT.search(message) is not None


# Replies as answered -> the replies that count (see UpstashClient.pipeline).
Expand = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]

# Errors of a text not known as a region's: a pipeline of at least this many commands, most
# of which failed, failed as a region (fewer tell nothing of the region).
MOST_FAILED_MIN = 3


def region_failure(replies: list[dict[str, Any]]) -> str | None:
    """The error that makes this whole pipeline a region failure, if any: a region-level
    error text, whatever the number of commands, or most commands of the pipeline failing."""
    errors = [str(r["error"]) for r in replies if "error" in r]
    for error in errors:
        if is_region_error(error):
            return error
    if (
        len(replies) >= MOST_FAILED_MIN
        and len(errors) * 2 > len(replies)
        and not all("NOSCRIPT" in e for e in errors)
    ):
        return f"{len(errors)} of {len(replies)} commands failed: {errors[0]}"
    return None


# Transport errors that prove the request never left: httpcore writes no byte of a request
# before its connection is set up, so a failed or timed-out TCP connect, DNS lookup or TLS
# handshake (ConnectError, ConnectTimeout), a proxy refusing the tunnel (ProxyError), no
# free connection in the pool (PoolTimeout) or a URL it cannot send to (UnsupportedProtocol)
# sent nothing: httpx uses neither TCP Fast Open nor TLS early data, and a connect timeout
# ends before anything is written. Any other (a write or read error or timeout, a dropped
# connection) may have carried the request, whole, to a region that ran it.
NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


class UpstashClient:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float = 5.0,
        retry_window: float = 15.0,
        may_retry: Callable[[], bool] = lambda: True,
        on_attempt: Callable[[bool], None] | None = None,
        on_retry: Callable[[str, int, float], None] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: an in-process seam
    ) -> None:
        self.endpoint = endpoint
        self.region = endpoint.region
        self.retry_window = retry_window
        self.may_retry = may_retry  # e.g. not while the breaker is open or stopping
        self.on_attempt = on_attempt  # called with True/False after every attempt
        self.on_retry = on_retry  # called with (error, attempt, wait_s) before a retry
        self.sleep = sleep
        self.sync_token: str | None = None  # Upstash read-your-writes
        self.last_error: str | None = None  # why the latest attempt failed
        self._http = httpx.AsyncClient(
            base_url=endpoint.url,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {endpoint.token}",
                "Content-Type": "application/json",
            },
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def command(self, *args: Any) -> Any:
        """One command (POST / with a JSON array); returns its result or raises PublishError."""
        reply = await self._send("", json.dumps(args))
        if "error" in reply:
            raise PublishError(f"region {self.region}: {reply['error']}")
        return reply["result"]

    async def pipeline(
        self,
        commands: list[list[Any]],
        body: str | None = None,
    ) -> list[dict[str, Any]]:
        """Many commands in one request; each reply is {"result": x} or {"error": "..."}.
        Raises MalformedReply when the answer is not one such reply per command, and
        counts a region-level failure (see region_failure) as a failed attempt."""
        return await self._send("/pipeline", body or json.dumps(commands), len(commands))

    async def push(self, body: str, expand: Expand) -> list[dict[str, Any]]:
        """One push call: a /pipeline body (JSON, already encoded) of one command whose
        reply `expand` reads into the replies that count, one per job (raising
        MalformedReply on an answer of the wrong shape); those are judged as a pipeline's."""
        return await self._send("/pipeline", body, 1, expand)

    async def _send(
        self, path: str, body: str, commands: int | None = None, expand: Expand | None = None
    ) -> Any:
        def retry_allowed(state: RetryCallState) -> bool:
            return retry_if_exception_type(TransientError)(state) and self.may_retry()

        def count_retry(state: RetryCallState) -> None:
            metrics.publish_retries.labels(self.region).inc()
            if self.on_retry:
                exc = state.outcome.exception() if state.outcome else None
                wait_s = state.next_action.sleep if state.next_action else 0.0
                self.on_retry(str(exc), state.attempt_number, wait_s)

        ran = False  # whether an attempt so far may have run the request

        async def attempt() -> Any:
            nonlocal ran
            try:
                return await self._post_once(path, body, commands, expand)
            except PublishError as exc:
                # what an earlier attempt may have done stays possible: the error says so
                ran = exc.may_have_run = ran or exc.may_have_run
                raise

        retrying = AsyncRetrying(
            stop=stop_after_delay(self.retry_window),
            retry=retry_allowed,
            wait=REQUEST_RETRY,
            sleep=self.sleep,
            before_sleep=count_retry,
            reraise=True,
        )
        return await retrying(attempt)

    async def _post_once(
        self, path: str, body: str, commands: int | None, expand: Expand | None
    ) -> Any:
        headers = {"Upstash-Sync-Token": self.sync_token} if self.sync_token else None
        started = time.perf_counter()
        try:
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:  # connect/read errors, timeouts, dropped sockets
            sent = not isinstance(exc, NEVER_SENT)
            error: PublishError = TransientError(
                f"region {self.region}: {type(exc).__name__}", sent=sent
            )
            self._attempted(False, str(error))
            raise error from exc
        metrics.publish_latency.labels(self.region).observe(time.perf_counter() - started)
        if response.status_code >= 500 or response.status_code == 429:
            error = TransientError(f"region {self.region}: HTTP {response.status_code}")
            self._attempted(False, str(error))
            raise error
        if response.status_code in (401, 403):
            error = TokenRefused(self.region, response.status_code)
            self._attempted(False, str(error))
            raise error
        try:
            reply = response.json()
        except ValueError:
            reply = None
            if response.status_code == 200:
                error = MalformedReply(f"region {self.region}: reply is not JSON")
                self._attempted(False, str(error))
                raise error from None
        if response.status_code != 200:
            message = reply.get("error") if isinstance(reply, dict) else None
            error = RequestRejected(
                self.region, response.status_code, str(message or "no error text")[:300]
            )
            self._attempted(False, str(error))
            raise error
        if commands is not None:
            if (
                not isinstance(reply, list)
                or len(reply) != commands
                or not all(isinstance(r, dict) and ("result" in r or "error" in r) for r in reply)
            ):
                # never guess which command a reply belongs to
                error = MalformedReply(
                    f"region {self.region}: /pipeline answered "
                    f"{len(reply) if isinstance(reply, list) else 'no list'} replies "
                    f"to {commands} commands"
                    + (
                        ""
                        if not isinstance(reply, list) or len(reply) != commands
                        else " (malformed items)"
                    )
                )
                self._attempted(False, str(error))
                raise error
            if expand is not None:
                try:
                    reply = expand(reply)
                except MalformedReply as malformed:
                    self._attempted(False, str(malformed))
                    raise
            refused = region_failure(reply)
            self._attempted(refused is None, f"region {self.region}: {refused}")
        elif not isinstance(reply, dict) or not ("result" in reply or "error" in reply):
            error = MalformedReply(f"region {self.region}: malformed reply")
            self._attempted(False, str(error))
            raise error
        else:
            self._attempted(True)
        self.sync_token = response.headers.get("upstash-sync-token", self.sync_token)
        return reply

    def _attempted(self, ok: bool, error: str | None = None) -> None:
        self.last_error = None if ok else error
        if self.on_attempt:
            self.on_attempt(ok)
