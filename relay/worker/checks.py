"""Running one check as its job says, SSRF-safe: the URL rule, the host resolved here and
every address checked, the connection made to the address that was checked (SNI and Host
stay the URL's), each redirect target checked the same way, the body read capped."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import certifi
import httpcore
import httpx

from relay import __version__
from relay.worker.targets import (
    IPAddress,
    Refusal,
    address_problem,
    url_host_address,
    url_problem,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"pgpulse-worker/{__version__}"
ADDRESS = "pgpulse.address"  # the request extension naming the address to connect to

# error classes a result carries (None: the check passed)
DNS, REFUSED, TIMEOUT, TLS = "dns", "refused", "timeout", "tls"
STATUS_MISMATCH, REFUSED_TARGET = "status_mismatch", "refused_target"
PROTOCOL, REDIRECT_LOOP = "protocol", "redirects"

Resolver = Callable[[str, int], Awaitable[list[str]]]


class MalformedJob(ValueError):
    """A job that is not a check this worker can run (counted and skipped)."""


def _unix(text: Any, field: str) -> float:
    if not isinstance(text, str):
        raise MalformedJob(f"{field} is not a timestamp")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedJob(f"{field} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise MalformedJob(f"{field} has no time zone")
    return value.timestamp()


def _int(job: dict, field: str, default: int, lo: int, hi: int, where: dict | None = None) -> int:
    value = (job if where is None else where).get(field, default)
    if type(value) is not int or not lo <= value <= hi:
        raise MalformedJob(f"{field} must be an integer {lo}-{hi}")
    return value


@dataclass(frozen=True)
class CheckJob:
    """The parts of a job (docs/queue-contract.md) a check needs."""

    job_id: str
    monitor_id: str
    url: str
    method: str
    timeout_s: float
    expected_status: frozenset[int]
    max_attempts: int
    delay_s: float
    region: str
    criticality: str
    scheduled_for: float  # unix seconds
    expires_at: float

    @classmethod
    def parse(cls, body: str) -> CheckJob:
        try:
            job = json.loads(body)
        except ValueError:
            raise MalformedJob("not JSON") from None
        if not isinstance(job, dict):
            raise MalformedJob("not a JSON object")
        for field in ("job_id", "url", "region"):
            if not isinstance(job.get(field), str) or not job[field]:
                raise MalformedJob(f"{field} is missing or not a string")
        method = job.get("method", "GET")
        if method not in METHODS:
            raise MalformedJob(f"method must be one of {', '.join(sorted(METHODS))}")
        expected = job.get("expected_status", [200])
        if (
            not isinstance(expected, list)
            or not 1 <= len(expected) <= 32
            or not all(type(s) is int and 100 <= s <= 599 for s in expected)
        ):
            raise MalformedJob("expected_status must be 1-32 HTTP status codes")
        retry = job.get("retry", {})
        if not isinstance(retry, dict):
            raise MalformedJob("retry must be an object")
        return cls(
            job_id=job["job_id"],
            monitor_id=str(job.get("monitor_id", "")),
            url=job["url"],
            method=method,
            timeout_s=_int(job, "timeout_ms", 10_000, 100, 120_000) / 1000,
            expected_status=frozenset(expected),
            max_attempts=_int(job, "max_attempts", 1, 1, 6, retry),
            delay_s=_int(job, "delay_ms", 0, 0, 60_000, retry) / 1000,
            region=job["region"],
            criticality=str(job.get("criticality", "normal")),
            scheduled_for=_unix(job.get("scheduled_for"), "scheduled_for"),
            expires_at=_unix(job.get("expires_at"), "expires_at"),
        )


@dataclass
class CheckResult:
    """What one run of a check found (a result payload for the ack)."""

    job_id: str
    monitor_id: str
    url: str
    region: str
    scheduled_for: float
    started_at: float  # unix seconds, when the first attempt began
    finished_at: float
    ok: bool
    status: int | None  # the final response's status
    latency_ms: float | None  # the last attempt, start to (capped) body read
    error: str | None  # an error class (None: ok)
    detail: str  # one line
    attempts: int
    address: str | None  # the address connected to
    run: int = 1  # which run of the job (more after a lease ran out)

    def as_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class _Attempt:
    """One attempt's outcome."""

    def __init__(self, error: str | None, detail: str, status: int | None = None) -> None:
        self.error, self.detail, self.status = error, detail, status
        self.address: str | None = None
        self.latency_ms: float | None = None


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address that was checked, whatever host the request names (the
    request's host still goes into SNI, certificate checks and the Host header)."""

    def __init__(self, address: str, backend: httpcore.AsyncNetworkBackend) -> None:
        self.address = address
        self.backend = backend

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return await self.backend.connect_tcp(
            self.address, port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not check targets")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response, connection: httpcore.AsyncHTTPConnection):
        self.response, self.connection = response, connection

    async def __aiter__(self):
        async for part in self.response.stream:
            yield part

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            await self.connection.aclose()


class PinnedTransport(httpx.AsyncBaseTransport):
    """A new connection per request (checks are to different hosts), to the address in the
    request's `pgpulse.address` extension; a request without one is refused."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.ssl_context = ssl_context
        self.backend = httpcore.AnyIOBackend()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        address = request.extensions.get(ADDRESS)
        if not address:
            raise httpx.ConnectError("no checked address to connect to", request=request)
        url = request.url
        connection = httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(
                url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80)
            ),
            ssl_context=self.ssl_context,
            network_backend=_PinnedBackend(address, self.backend),
        )
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions={k: v for k, v in request.extensions.items() if k != ADDRESS},
        )
        try:
            response = await connection.handle_async_request(core)
        except BaseException:
            await connection.aclose()
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response, connection),
            extensions=response.extensions,
        )


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _error_class(exc: BaseException) -> str:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, ssl.SSLError) for e in chain) or any(
        "SSL" in str(e) or "CERTIFICATE" in str(e).upper() for e in chain
    ):
        return TLS
    if any(
        isinstance(e, (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException))
        for e in chain
    ):
        return TIMEOUT
    if any(
        isinstance(e, (httpx.ConnectError, httpcore.ConnectError, ConnectionError)) for e in chain
    ):
        return REFUSED
    return PROTOCOL


class Checker:
    """Runs checks; one per call, many at once. `resolver` is injectable (tests)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        max_body_bytes: int = 65_536,
        max_redirects: int = 5,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.max_body_bytes = max_body_bytes
        self.max_redirects = max_redirects
        self.sleep = sleep
        context = ssl.create_default_context(cafile=certifi.where())
        self.http = httpx.AsyncClient(
            transport=PinnedTransport(context),
            trust_env=False,  # no proxy or netrc from the environment: the target is the job's
            follow_redirects=False,  # followed here, each target checked first
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def target_problem(self, url: httpx.URL) -> tuple[str | None, Refusal | str | None]:
        """(the address to connect to, None) or (None, why not): a Refusal, or "dns: ..."."""
        refusal = url_problem(str(url), self.allow_private)
        if refusal is not None:
            return None, refusal
        literal = url_host_address(url.host)
        if literal is not None:
            return str(literal), None
        return await self.resolved_address(
            url.host, url.port or (443 if url.scheme == "https" else 80)
        )

    async def resolved_address(
        self, host: str, port: int
    ) -> tuple[str | None, Refusal | str | None]:
        """The first address `host` resolves to, when none of them is refused."""
        try:
            addresses = await self.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            return None, f"dns: {host}: {getattr(exc, 'strerror', None) or exc}"
        if not addresses:
            return None, f"dns: {host}: no address"
        for text in addresses:
            try:
                ip: IPAddress = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                return None, f"dns: {host}: not an address: {text[:60]}"
            refusal = address_problem(ip, self.allow_private, f"{host} ({ip})")
            if refusal is not None:
                return None, refusal
        return addresses[0], None

    async def check(self, job: CheckJob, run: int = 1) -> CheckResult:
        """The check with its own retries: up to max_attempts, delay_s apart; a refused
        target is not tried again."""
        started = time.time()
        attempt = _Attempt(PROTOCOL, "not run")
        tries = 0
        for tries in range(1, job.max_attempts + 1):
            attempt = await self._attempt(job)
            if attempt.error in (None, REFUSED_TARGET):
                break
            if tries < job.max_attempts:
                await self.sleep(job.delay_s)
        return CheckResult(
            job_id=job.job_id,
            monitor_id=job.monitor_id,
            url=job.url,
            region=job.region,
            scheduled_for=job.scheduled_for,
            started_at=started,
            finished_at=time.time(),
            ok=attempt.error is None,
            status=attempt.status,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            detail=attempt.detail[:300],
            attempts=tries,
            address=attempt.address,
            run=run,
        )

    async def _attempt(self, job: CheckJob) -> _Attempt:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(job.timeout_s):
                result = await self._follow(job)
        except TimeoutError:
            result = _Attempt(TIMEOUT, f"no answer within {job.timeout_s:g} s")
        result.latency_ms = round((time.perf_counter() - began) * 1000, 2)
        return result

    async def _follow(self, job: CheckJob) -> _Attempt:
        try:
            url = httpx.URL(job.url)
        except (httpx.InvalidURL, ValueError) as exc:
            return _Attempt(REFUSED_TARGET, f"url: {exc}")
        method = job.method
        address: str | None = None
        for _hop in range(self.max_redirects + 1):
            address, problem = await self.target_problem(url)
            if problem is not None:
                if isinstance(problem, Refusal):
                    return _Attempt(REFUSED_TARGET, f"{problem.reason}: {problem.message}")
                return _Attempt(DNS, problem)
            try:
                request = self.http.build_request(
                    method, url, extensions={ADDRESS: address}, timeout=job.timeout_s
                )
                response = await self.http.send(request, stream=True)
                try:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= self.max_body_bytes:
                            break  # enough: the rest of the body is not ours to fetch
                finally:
                    await response.aclose()
            except TimeoutError:
                raise
            except Exception as exc:  # transport and protocol errors, classified
                attempt = _Attempt(_error_class(exc), f"{type(exc).__name__}: {exc}")
                attempt.address = address
                return attempt
            status = response.status_code
            location = response.headers.get("location")
            if status in REDIRECTS and status not in job.expected_status and location:
                try:
                    url = url.join(location)
                except (httpx.InvalidURL, ValueError) as exc:
                    return _Attempt(REFUSED_TARGET, f"redirect: {exc}", status)
                if status == 303 or (status in (301, 302) and method == "POST"):
                    method = "GET" if method != "HEAD" else method
                continue
            if status in job.expected_status:
                attempt = _Attempt(None, f"HTTP {status}", status)
            else:
                attempt = _Attempt(
                    STATUS_MISMATCH,
                    f"HTTP {status}, expected {', '.join(map(str, sorted(job.expected_status)))}",
                    status,
                )
            attempt.address = address
            return attempt
        attempt = _Attempt(REDIRECT_LOOP, f"more than {self.max_redirects} redirects")
        attempt.address = address
        return attempt
