"""Which errors concern the whole region (relay.delivery.upstash): inline errors of a /pipeline
answer, whatever the number of jobs, and which failed requests surely never ran."""

import socket

import httpx
import pytest

from relay.config import Endpoint
from relay.delivery.upstash import UpstashClient, is_region_error, region_failure
from relay.errors import PublishError, TokenRefused, TransientError


@pytest.mark.parametrize(
    "error",
    [
        "ERR DB capacity quota exceeded",
        "ERR max requests limit exceeded",
        "ERR max requests limit exceeded. Limit: 500000, Usage: 500000.",
        "ERR max daily request limit exceeded",
        "ERR max daily request limit exceeded. Limit: 10000, Usage: 10000. See "
        "https://upstash.com/docs/redis/troubleshooting/max_daily_request_limit for details",
        "ERR max concurrent connections exceeded",
        "ERR max request size exceeded. Limit: 10485760 bytes, Actual: 10485761 bytes",
        "ERR max single record size exceeded",
        # bandwidth and rate limits, whose texts Upstash does not document
        "ERR max monthly bandwidth limit exceeded",
        "ERR bandwidth quota exceeded",
        "ERR rate limit exceeded",
        "ERR Too many requests",
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'. script: 0d4..., on @user_script:9.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
    ],
)
def test_database_and_request_errors_concern_the_region(error):
    assert is_region_error(error)
    assert region_failure([{"result": 1}, {"error": error}, {"result": 0}]) == error
    # whatever the batch: one job, or two that both failed
    assert region_failure([{"error": error}]) == error
    assert region_failure([{"error": error}] * 2) == error


@pytest.mark.parametrize(
    "error",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR injected for the test",
        "NOSCRIPT No matching script. Please use EVAL.",
        "ERR oom-like text in a job's own error",
        "ERR max key size exceeded. Limit: 32768 bytes, Actual: 40000 bytes",
    ],
)
def test_other_errors_concern_their_job(error):
    assert not is_region_error(error)
    assert region_failure([{"result": 1}, {"error": error}, {"result": 1}]) is None
    assert region_failure([{"error": error}]) is None  # a batch of one: still its job's


def test_most_of_a_pipeline_failing_is_a_region_failure_from_three_commands():
    failing = [{"error": "ERR something new"}] * 2 + [{"result": 1}]
    assert region_failure(failing) == "2 of 3 commands failed: ERR something new"
    assert region_failure([{"error": "ERR x"}, {"error": "ERR x"}]) is None  # too few to tell
    assert region_failure([{"error": "ERR x"}] * 2 + [{"result": 1}] * 2) is None  # half
    assert region_failure([{"error": "NOSCRIPT No matching script"}] * 3) is None  # reloaded


# ------------------------------------------------------------ requests that never ran


async def no_wait(seconds: float) -> None:
    pass


def client_for(url: str, **kwargs) -> UpstashClient:
    return UpstashClient(Endpoint("eu", url, "tok-test"), timeout=2.0, sleep=no_wait, **kwargs)


async def test_a_refused_connection_surely_never_ran():
    with socket.socket() as sock:  # bound, not listening: a connect is refused
        sock.bind(("127.0.0.1", 0))
        client = client_for(f"http://127.0.0.1:{sock.getsockname()[1]}", retry_window=0.3)
        try:
            with pytest.raises(TransientError, match="ConnectError") as caught:
                await client.pipeline([["PING"]])
        finally:
            await client.aclose()
    assert caught.value.may_have_run is False


async def attempts_end_with(*steps) -> PublishError:
    """The error of a request whose attempts raise or answer as `steps` say, in turn (a
    transport at httpx's seam; retried while steps are left)."""
    left = list(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        step = left.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    client = client_for("http://eu.test", may_retry=lambda: bool(left))
    await client._http.aclose()
    client._http = httpx.AsyncClient(
        base_url="http://eu.test", transport=httpx.MockTransport(handle)
    )
    try:
        with pytest.raises(PublishError) as caught:
            await client.pipeline([["PING"]])
    finally:
        await client.aclose()
    assert not left
    return caught.value


@pytest.mark.parametrize(
    ("error", "ran"),
    [
        (httpx.ConnectError("refused"), False),  # also DNS and TLS handshake failures
        (httpx.ConnectTimeout("connect"), False),  # nothing is written before it connects
        (httpx.PoolTimeout("pool"), False),
        (httpx.ProxyError("tunnel refused"), False),
        (httpx.WriteError("broken pipe"), True),  # part or all of the request went
        (httpx.WriteTimeout("write"), True),
        (httpx.ReadTimeout("read"), True),
        (httpx.ReadError("reset"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
    ],
)
async def test_which_transport_errors_prove_the_request_never_ran(error, ran):
    caught = await attempts_end_with(error, error)
    assert isinstance(caught, TransientError) and caught.may_have_run is ran


async def test_an_attempt_that_may_have_run_taints_the_later_ones():
    refused = httpx.Response(401, json={"error": "WRONGPASS invalid or missing auth token"})
    assert (await attempts_end_with(refused)).may_have_run is False
    caught = await attempts_end_with(httpx.ReadTimeout("read"), refused)
    assert isinstance(caught, TokenRefused) and caught.may_have_run is True
    caught = await attempts_end_with(httpx.ReadTimeout("read"), httpx.ConnectError("refused"))
    assert isinstance(caught, TransientError) and caught.may_have_run is True
