"""One push call per request: how the script's answer becomes one outcome per job."""

from __future__ import annotations

import json

import pytest

from relay.delivery.outcomes import DUPLICATE, EXPIRED, FAILED, HELD, PUSHED, Outcome
from relay.delivery.publish import CALL_OVERHEAD_BYTES, Publisher, Push, job_replies, push_body
from relay.errors import MalformedReply, RequestRejected, TokenRefused, TransientError
from tests.support.fakes import Clock, make_job, make_region


def test_a_push_call_carries_keys_then_arguments_in_job_order():
    jobs = [make_job(1), make_job(2)]
    pushes = [Push.of(job, "eu", rerouted=False) for job in jobs]
    [call] = json.loads(push_body("sha", 60, pushes))
    expires = [str(int(job.expires_at_s)) for job in jobs]
    assert call == [
        "EVALSHA",
        "sha",
        "4",
        f"pgpulse:dedup:{jobs[0].job_id}",
        "pgpulse:jobs:eu:normal",
        f"pgpulse:dedup:{jobs[1].job_id}",
        "pgpulse:jobs:eu:normal",
        "60",
        jobs[0].job_json,
        expires[0],
        jobs[1].job_json,
        expires[1],
    ]
    assert len(push_body("sha", 60, pushes)) <= CALL_OVERHEAD_BYTES + sum(p.size for p in pushes)


def test_a_job_is_escaped_once_and_exactly():
    job = make_job(1)
    odd = job._replace(job_json='{"url": "https://x.test/\\"q\\"\u00e9\u2028"}')
    push = Push.of(odd, "eu", rerouted=True)
    [call] = json.loads(push_body("sha", 60, [push]))
    assert json.loads(call[6]) == {**json.loads(odd.job_json), "delivered_to": "eu"}


def test_the_answer_is_read_per_job_and_a_call_error_is_every_jobs_error():
    expand = job_replies("eu", 3)
    assert expand([{"result": [1, "WRONGTYPE no", 2]}]) == [
        {"result": 1},
        {"error": "WRONGTYPE no"},
        {"result": 2},
    ]
    assert (
        expand([{"error": "OOM command not allowed"}]) == [{"error": "OOM command not allowed"}] * 3
    )


@pytest.mark.parametrize(
    "result", [1, [1, 1], [1, 1, 1, 1], [1, 7, 1], [1, True, 1], [1, None, 1], "OK"]
)
def test_an_answer_of_the_wrong_shape_is_malformed_never_guessed(result):
    with pytest.raises(MalformedReply, match="region eu: the push script answered"):
        job_replies("eu", 3)([{"result": result}])


async def test_requests_stay_under_the_byte_bound_and_each_job_gets_its_outcome():
    eu = make_region("eu", Clock())
    jobs = [make_job(i) for i in range(1, 11)]
    size = Push.of(jobs[0], "eu", rerouted=False).size
    eu.client.answer = lambda calls: [
        {"result": [1, 0, 2, "ERR x"][: int(c[2]) // 2] + [1] * max(0, int(c[2]) // 2 - 4)}
        for c in calls
    ]
    outcomes = await Publisher(100 + 4 * size, 60).publish(eu, jobs, rerouted=False)
    # four jobs a request (four arguments each), then the last two
    assert [len(r[0]) for r in eu.client.requests] == [3 + 1 + 4 * 4] * 2 + [3 + 1 + 2 * 4]
    assert outcomes[:4] == [
        Outcome(PUSHED),
        Outcome(DUPLICATE),
        Outcome(EXPIRED),
        Outcome(FAILED, "ERR x"),
    ]
    assert outcomes[8:] == [Outcome(PUSHED), Outcome(DUPLICATE)]


async def test_a_region_error_in_the_answer_holds_the_jobs():
    eu = make_region("eu", Clock())
    eu.client.answer = lambda calls: [{"result": ["READONLY replica"] * 3}]
    outcomes = await Publisher(1 << 20, 60).publish(
        eu, [make_job(i) for i in (1, 2, 3)], rerouted=False
    )
    assert {o.kind for o in outcomes} == {HELD}


DAILY_LIMIT = "ERR max daily request limit exceeded. Limit: 10000, Usage: 10000."


def failing(error):
    def answer(calls):
        raise error

    return answer


async def test_a_push_that_never_ran_holds_its_jobs_and_those_not_sent_yet():
    eu = make_region("eu", Clock())
    jobs = [make_job(i) for i in range(1, 7)]
    size = Push.of(jobs[0], "eu", rerouted=False).size
    answers = iter(
        [
            lambda calls: [{"result": [1, 1]}],
            failing(TransientError("region eu: ConnectError", sent=False)),
        ]
    )
    eu.client.answer = lambda calls: next(answers)(calls)
    # two jobs a request: the first pushed, the second refused its connection, the third
    # never tried
    outcomes = await Publisher(CALL_OVERHEAD_BYTES + 2 * size, 60).publish(eu, jobs, rerouted=False)
    assert len(eu.client.requests) == 2
    assert outcomes[:2] == [Outcome(PUSHED)] * 2
    assert outcomes[2:] == [Outcome(HELD, "region eu: ConnectError")] * 4
    assert isinstance(outcomes[2].cause, TransientError)


@pytest.mark.parametrize(
    "error",
    [
        TransientError("region eu: ReadTimeout"),  # may have run: unknown, never guessed
        MalformedReply("region eu: reply is not JSON"),
    ],
)
async def test_a_script_load_that_failed_holds_every_job_whatever_became_of_it(error):
    eu = make_region("eu", Clock())
    eu.script_sha = None

    async def command(*args):
        raise error

    eu.client.command = command
    outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(1), make_job(2)], rerouted=False)
    assert [o.kind for o in outcomes] == [HELD] * 2 and outcomes[0].cause is error
    assert eu.client.requests == []


async def test_a_push_that_may_have_run_is_raised_and_a_refused_token_held():
    eu = make_region("eu", Clock())
    eu.client.answer = failing(TransientError("region eu: ReadTimeout"))
    with pytest.raises(TransientError):
        await Publisher(1 << 20, 60).publish(eu, [make_job(1)], rerouted=False)
    eu.client.answer = failing(TokenRefused("eu", 401))
    [outcome] = await Publisher(1 << 20, 60).publish(eu, [make_job(1)], rerouted=False)
    assert outcome.kind == HELD and isinstance(outcome.cause, TokenRefused)


async def test_a_request_refused_for_the_regions_quota_holds_its_jobs():
    eu = make_region("eu", Clock())
    eu.client.answer = failing(RequestRejected("eu", 400, DAILY_LIMIT))
    outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(1)], rerouted=False)
    assert [o.kind for o in outcomes] == [HELD]
    # a job alone over the region's size limit is its own failure, and a proxy's 400 too
    too_large = "ERR max request size exceeded. Limit: 100 bytes, Actual: 900 bytes"
    for error in (too_large, "Bad Request"):
        eu.client.answer = failing(RequestRejected("eu", 400, error))
        outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(1)], rerouted=False)
        assert [o.kind for o in outcomes] == [FAILED]


@pytest.mark.parametrize("jobs", [1, 2])
async def test_a_quota_error_holds_a_batch_of_any_size(jobs):
    eu = make_region("eu", Clock())
    eu.client.answer = lambda calls: [{"error": DAILY_LIMIT}]
    outcomes = await Publisher(1 << 20, 60).publish(
        eu, [make_job(i) for i in range(jobs)], rerouted=False
    )
    assert [o.kind for o in outcomes] == [HELD] * jobs
    assert eu.breaker.failures == 1
