"""The relay's request splitting and reply handling, in-process: how each answer of Upstash's
REST API is classified (relay.delivery.upstash.UpstashClient, at httpx's transport seam), and how a
batch of jobs is split into push requests under the byte bound (relay.delivery.publish.Publisher,
against a fake region client). The same against the dev server over real HTTP:
tests/integration/test_publish_devserver.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from relay.config import Endpoint
from relay.delivery.outcomes import FAILED, PUSHED
from relay.delivery.publish import CALL_OVERHEAD_BYTES, Publisher, Push, job_replies
from relay.delivery.upstash import UpstashClient
from relay.errors import MalformedReply, PublishError, RequestRejected, TokenRefused, TransientError
from tests.support.fakes import Clock, jobs_in, make_job, make_region

TOKEN = "tok-unit-5e1d0c"
COMMANDS = [["SET", "k", "1"], ["GET", "k"]]
OK = [{"result": "OK"}, {"result": "1"}]
TOO_LARGE = "ERR max request size exceeded. Limit: 100 bytes, Actual: 900 bytes"


def answer(status: int, body: Any = None, *, raw: bytes | None = None, **headers: str):
    """One HTTP answer: `body` as JSON, or `raw` bytes as they are."""
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


class RegionEndpoint:
    """A region's endpoint at httpx's transport seam: answers each request with the next of
    `answers` and records the requests."""

    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


async def no_wait(seconds: float) -> None:
    pass


def client_answering(*answers: httpx.Response) -> tuple[UpstashClient, RegionEndpoint, list]:
    """A client whose every attempt is reported, retrying (at once) while answers are left."""
    endpoint = RegionEndpoint(list(answers))
    attempts: list[bool] = []
    client = UpstashClient(
        Endpoint("eu", "http://eu.test", TOKEN),
        sleep=no_wait,
        may_retry=lambda: bool(endpoint.answers),
        on_attempt=attempts.append,
        transport=httpx.MockTransport(endpoint),
    )
    return client, endpoint, attempts


# (what, the answers in turn (an answer after the first is there to be taken by a retry),
#  what the call returns or raises and with which text, requests made, attempts reported)
PIPELINE = [
    ("every command ran", [answer(200, OK)], OK, 1, [True]),
    (
        "a command's own error: still a good request",
        [answer(200, [{"result": "OK"}, {"error": "WRONGTYPE wrong kind"}])],
        [{"result": "OK"}, {"error": "WRONGTYPE wrong kind"}],
        1,
        [True],
    ),
    (
        "a region's error inline: returned, the attempt failed",
        [answer(200, [{"result": "OK"}, {"error": "READONLY You can't write"}])],
        [{"result": "OK"}, {"error": "READONLY You can't write"}],
        1,
        [False],
    ),
    (
        "401: the token refused, never retried",
        [answer(401, {"error": "WRONGPASS invalid or missing auth token"}), answer(200, OK)],
        (TokenRefused, "region eu: token refused (HTTP 401)"),
        1,
        [False],
    ),
    (
        "403: the token refused",
        [answer(403, {"error": "forbidden"}), answer(200, OK)],
        (TokenRefused, "region eu: token refused (HTTP 403)"),
        1,
        [False],
    ),
    (
        "429: tried again",
        [answer(429, {"error": "ERR too many requests"}), answer(200, OK)],
        OK,
        2,
        [False, True],
    ),
    ("500: tried again", [answer(500, raw=b"oops"), answer(200, OK)], OK, 2, [False, True]),
    (
        "502 then 503: tried until the retries end",
        [answer(502, raw=b""), answer(503, raw=b"")],
        (TransientError, "region eu: HTTP 503"),
        2,
        [False, False],
    ),
    (
        "200 not JSON: malformed, never retried",
        [answer(200, raw=b"<html>proxy</html>"), answer(200, OK)],
        (MalformedReply, "region eu: reply is not JSON"),
        1,
        [False],
    ),
    (
        "200 an object",
        [answer(200, {"result": "OK"}), answer(200, OK)],
        (MalformedReply, "/pipeline answered no list replies to 2 commands"),
        1,
        [False],
    ),
    (
        "200 null",
        [answer(200, None), answer(200, OK)],
        (MalformedReply, "/pipeline answered no list replies to 2 commands"),
        1,
        [False],
    ),
    (
        "200 one reply short",
        [answer(200, OK[:1]), answer(200, OK)],
        (MalformedReply, "/pipeline answered 1 replies to 2 commands"),
        1,
        [False],
    ),
    (
        "200 one reply too many",
        [answer(200, [*OK, {"result": 1}]), answer(200, OK)],
        (MalformedReply, "/pipeline answered 3 replies to 2 commands"),
        1,
        [False],
    ),
    (
        "200 bare values, not replies",
        [answer(200, ["OK", "1"]), answer(200, OK)],
        (MalformedReply, "/pipeline answered 2 replies to 2 commands (malformed items)"),
        1,
        [False],
    ),
    (
        "200 an object neither result nor error",
        [answer(200, [{"value": 1}, {"result": 1}]), answer(200, OK)],
        (MalformedReply, "(malformed items)"),
        1,
        [False],
    ),
    (
        "400 too large: refused as a whole, never retried",
        [answer(400, {"error": TOO_LARGE}), answer(200, OK)],
        (RequestRejected, f"region eu: HTTP 400: {TOO_LARGE}"),
        1,
        [False],
    ),
    (
        "400 from a proxy, no error text",
        [answer(400, raw=b"<html>Bad Request</html>"), answer(200, OK)],
        (RequestRejected, "region eu: HTTP 400: no error text"),
        1,
        [False],
    ),
    (
        "413 from a proxy",
        [answer(413, raw=b""), answer(200, OK)],
        (RequestRejected, "region eu: HTTP 413: no error text"),
        1,
        [False],
    ),
]


@pytest.mark.parametrize(
    ("answers", "expected", "requests", "attempts"),
    [case[1:] for case in PIPELINE],
    ids=[case[0] for case in PIPELINE],
)
async def test_how_a_pipeline_answer_is_classified(answers, expected, requests, attempts):
    client, endpoint, reported = client_answering(*answers)
    try:
        if isinstance(expected, tuple):
            kind, text = expected
            with pytest.raises(PublishError) as caught:
                await client.pipeline(COMMANDS)
            assert type(caught.value) is kind and text in str(caught.value)
            assert client.last_error == str(caught.value)
        else:
            assert await client.pipeline(COMMANDS) == expected
    finally:
        await client.aclose()
    assert len(endpoint.requests) == requests
    assert reported == attempts
    for request in endpoint.requests:
        assert request.url.path == "/pipeline"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert json.loads(request.content) == COMMANDS


@pytest.mark.parametrize(
    ("status", "error", "too_large"),
    [(400, TOO_LARGE, True), (413, "", True), (400, "ERR Bad Request", False)],
)
async def test_a_request_refused_as_too_large_says_so(status, error, too_large):
    client, _, _ = client_answering(answer(status, {"error": error}))
    try:
        with pytest.raises(RequestRejected) as caught:
            await client.pipeline(COMMANDS)
    finally:
        await client.aclose()
    assert caught.value.too_large is too_large


# (what, the answer to one command, its result or (error, text))
COMMAND = [
    ("a result", answer(200, {"result": "PONG"}), "PONG"),
    (
        "an error",
        answer(200, {"error": "NOSCRIPT gone"}),
        (PublishError, "region eu: NOSCRIPT gone"),
    ),
    ("a list", answer(200, [{"result": "PONG"}]), (MalformedReply, "region eu: malformed reply")),
    ("an object without either", answer(200, {"x": 1}), (MalformedReply, "malformed reply")),
    (
        "400 with an error",
        answer(400, {"error": "ERR unknown"}),
        (RequestRejected, "HTTP 400: ERR unknown"),
    ),
]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [case[1:] for case in COMMAND],
    ids=[case[0] for case in COMMAND],
)
async def test_how_one_commands_answer_is_classified(reply, expected):
    client, endpoint, _ = client_answering(reply)
    try:
        if isinstance(expected, tuple):
            kind, text = expected
            with pytest.raises(PublishError) as caught:
                await client.command("PING")
            assert type(caught.value) is kind and text in str(caught.value)
        else:
            assert await client.command("PING") == expected
    finally:
        await client.aclose()
    [request] = endpoint.requests
    assert request.url.path == "/" and json.loads(request.content) == ["PING"]


async def test_the_sync_token_of_an_answer_goes_with_the_next_request():
    client, endpoint, _ = client_answering(
        answer(200, OK, **{"Upstash-Sync-Token": "sync-1"}), answer(200, OK), answer(200, OK)
    )
    client.may_retry = lambda: False
    try:
        for _ in range(3):
            await client.pipeline(COMMANDS)
    finally:
        await client.aclose()
    sent = [r.headers.get("upstash-sync-token") for r in endpoint.requests]
    assert sent == [None, "sync-1", "sync-1"]  # kept until a newer one comes


# (what, the push script's answer to a push of 2 jobs, the replies per job or the error's
#  text, the attempt reported)
PUSH = [
    ("pushed and duplicate", [{"result": [1, 0]}], [{"result": 1}, {"result": 0}], True),
    (
        "a job's own error",
        [{"result": [1, "WRONGTYPE x"]}],
        [{"result": 1}, {"error": "WRONGTYPE x"}],
        True,
    ),
    (
        "the call failed: each job's error",
        [{"error": "NOSCRIPT No matching script"}],
        [{"error": "NOSCRIPT No matching script"}] * 2,
        True,
    ),
    (
        "the call failed as a region",
        [{"error": "OOM command not allowed"}],
        [{"error": "OOM command not allowed"}] * 2,
        False,
    ),
    ("an answer short", [{"result": [1]}], "the push script answered 1 answers for 2 jobs", False),
    ("not a list", [{"result": "OK"}], "the push script answered no list for 2 jobs", False),
]


@pytest.mark.parametrize(
    ("reply", "expected", "ok"),
    [case[1:] for case in PUSH],
    ids=[case[0] for case in PUSH],
)
async def test_how_a_push_calls_answer_is_read_per_job(reply, expected, ok):
    client, _, attempts = client_answering(answer(200, reply))
    try:
        if isinstance(expected, str):
            with pytest.raises(MalformedReply, match=expected):
                await client.push("[]", job_replies("eu", 2))
        else:
            assert await client.push("[]", job_replies("eu", 2)) == expected
    finally:
        await client.aclose()
    assert attempts == [ok]


# ------------------------------------------------------------------ splitting a batch

SIZE = Push.of(make_job(1), "eu", rerouted=False).size  # each make_job's push (ids of one width)


def room_for(jobs: float) -> int:
    """A request bound that takes this many jobs of SIZE."""
    return int(CALL_OVERHEAD_BYTES + jobs * SIZE)


def sized(n: int, pushes: float) -> Any:
    """make_job(n) whose push is `pushes` times SIZE, to the byte (a padded job JSON)."""
    job = make_job(n)
    if pushes == 1:
        return job
    padded = job._replace(job_json=job.job_json[:-1] + ', "pad": ""}')
    pad = int(SIZE * pushes) - Push.of(padded, "eu", rerouted=False).size
    assert pad >= 0
    return job._replace(job_json=job.job_json[:-1] + ', "pad": "' + "y" * pad + '"}')


def refusing_over(jobs: int):
    """A region that refuses a request of more than `jobs` jobs as too large (HTTP 400)."""

    def answer_(calls: list[list[str]]) -> list[dict]:
        if sum(jobs_in(c) for c in calls) > jobs:
            raise RequestRejected("eu", 400, TOO_LARGE)
        return [{"result": [1] * jobs_in(c)} for c in calls]

    return answer_


# (what, the jobs' sizes in SIZEs, the relay's bound, the region's own limit in jobs (None:
#  none), the jobs of each request made, the jobs that failed)
SPLITS = [
    ("all in one request", [1] * 5, room_for(5), None, [[0, 1, 2, 3, 4]], []),
    ("one byte short: two", [1] * 5, room_for(5) - 1, None, [[0, 1, 2, 3], [4]], []),
    ("two a request", [1] * 5, room_for(2), None, [[0, 1], [2, 3], [4]], []),
    ("no jobs, no request", [], room_for(2), None, [], []),
    ("a bigger job starts a request", [1, 1, 1.5, 1], room_for(2.7), None, [[0, 1], [2, 3]], []),
    (
        "a job over the bound alone fails; the others go around it",
        [1, 3, 1, 1],
        room_for(2),
        None,
        [[0, 2], [3]],
        [1],
    ),
    (
        "the region's limit under the relay's: halved until each part fits",
        [1] * 8,
        room_for(100),
        2,
        [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5, 6, 7], [4, 5], [6, 7]],
        [],
    ),
    (
        "halved unevenly",
        [1] * 3,
        room_for(100),
        1,
        [[0, 1, 2], [0], [1, 2], [1], [2]],
        [],
    ),
    (
        "a job alone over the region's limit fails on its own",
        [1] * 2,
        room_for(100),
        0,
        [[0, 1], [0], [1]],
        [0, 1],
    ),
]


@pytest.mark.parametrize(
    ("sizes", "bound", "region_limit", "requests", "failed"),
    [case[1:] for case in SPLITS],
    ids=[case[0] for case in SPLITS],
)
async def test_how_a_batch_is_split_into_requests(sizes, bound, region_limit, requests, failed):
    eu = make_region("eu", Clock())
    eu.script_sha = "sha"
    if region_limit is not None:
        eu.client.answer = refusing_over(region_limit)
    jobs = [sized(i, size) for i, size in enumerate(sizes)]
    position = {job.job_id: i for i, job in enumerate(jobs)}
    outcomes = await Publisher(bound, 60).publish(eu, jobs, rerouted=False)
    made = [
        [
            position[job_id.removeprefix("pgpulse:dedup:")]
            for job_id in call[3 : 3 + int(call[2]) : 2]
        ]
        for [call] in eu.client.requests
    ]
    assert made == requests
    assert [i for i, o in enumerate(outcomes) if o.kind == FAILED] == failed
    assert all(o.kind == PUSHED for i, o in enumerate(outcomes) if i not in failed)
