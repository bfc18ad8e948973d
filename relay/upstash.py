"""A small async client for Upstash Redis's REST API: one keep-alive httpx client per
region, /pipeline requests, retries with exponential backoff and jitter (tenacity)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay,
                      wait_exponential_jitter)

from relay import metrics
from relay.config import Endpoint
from relay.errors import PublishError


class TransientError(PublishError):
    """A transport error, timeout or 5xx: worth retrying."""


class TokenRefused(PublishError):
    """The region's endpoint refused our token (HTTP 401/403): retrying will not help."""

    def __init__(self, region: str, status: int) -> None:
        super().__init__(f"region {region}: token refused (HTTP {status})")
        self.region = region


class UpstashClient:
    def __init__(self, endpoint: Endpoint, *, timeout: float = 5.0, retry_window: float = 15.0,
                 may_retry: Callable[[], bool] = lambda: True,
                 on_attempt: Callable[[bool], None] | None = None,
                 on_retry: Callable[[str, int, float], None] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.endpoint = endpoint
        self.region = endpoint.region
        self.retry_window = retry_window
        self.may_retry = may_retry          # e.g. not while the breaker is open or stopping
        self.on_attempt = on_attempt        # called with True/False after every attempt
        self.on_retry = on_retry            # called with (error, attempt, wait_s) before a retry
        self.sleep = sleep
        self.sync_token: str | None = None  # Upstash read-your-writes
        self._http = httpx.AsyncClient(
            base_url=endpoint.url, timeout=timeout,
            headers={"Authorization": f"Bearer {endpoint.token}",
                     "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def command(self, *args: Any) -> Any:
        """One command (POST / with a JSON array); returns its result or raises PublishError."""
        reply = await self._send("", json.dumps(args))
        if "error" in reply:
            raise PublishError(f"region {self.region}: {reply['error']}")
        return reply["result"]

    async def pipeline(self, commands: list[list[Any]]) -> list[dict[str, Any]]:
        """Many commands in one request; each reply is {"result": x} or {"error": "..."}."""
        replies = await self._send("/pipeline", json.dumps(commands))
        if not isinstance(replies, list) or len(replies) != len(commands):
            # never guess which command a reply belongs to: the caller rolls the batch back
            raise PublishError(f"region {self.region}: /pipeline answered "
                               f"{len(replies) if isinstance(replies, list) else 'no list'} "
                               f"replies to {len(commands)} commands")
        return replies

    async def _send(self, path: str, body: str) -> Any:
        def retry_allowed(state: RetryCallState) -> bool:
            return retry_if_exception_type(TransientError)(state) and self.may_retry()

        def count_retry(state: RetryCallState) -> None:
            metrics.publish_retries.labels(self.region).inc()
            if self.on_retry:
                exc = state.outcome.exception() if state.outcome else None
                wait_s = state.next_action.sleep if state.next_action else 0.0
                self.on_retry(str(exc), state.attempt_number, wait_s)

        retrying = AsyncRetrying(
            stop=stop_after_delay(self.retry_window), retry=retry_allowed,
            wait=wait_exponential_jitter(initial=0.05, max=2.0, jitter=0.1),
            sleep=self.sleep, before_sleep=count_retry, reraise=True)
        return await retrying(self._post_once, path, body)

    async def _post_once(self, path: str, body: str) -> Any:
        headers = {"Upstash-Sync-Token": self.sync_token} if self.sync_token else None
        started = time.perf_counter()
        try:
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:  # connect/read errors, timeouts, dropped sockets
            self._attempted(False)
            raise TransientError(f"region {self.region}: {type(exc).__name__}") from exc
        metrics.publish_latency.labels(self.region).observe(time.perf_counter() - started)
        if response.status_code >= 500 or response.status_code == 429:
            self._attempted(False)
            raise TransientError(f"region {self.region}: HTTP {response.status_code}")
        if response.status_code in (401, 403):
            self._attempted(False)
            raise TokenRefused(self.region, response.status_code)
        try:
            reply = response.json()
        except ValueError:
            self._attempted(False)
            raise TransientError(f"region {self.region}: reply is not JSON") from None
        if response.status_code != 200:
            self._attempted(False)
            message = reply.get("error") if isinstance(reply, dict) else None
            raise PublishError(f"region {self.region}: HTTP {response.status_code}: {message}")
        self.sync_token = response.headers.get("upstash-sync-token", self.sync_token)
        self._attempted(True)
        return reply

    def _attempted(self, ok: bool) -> None:
        if self.on_attempt:
            self.on_attempt(ok)
