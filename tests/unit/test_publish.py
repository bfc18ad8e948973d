"""One push call per request: how the script's answer becomes one outcome per job."""

from __future__ import annotations

import pytest

from relay.errors import MalformedReply
from relay.outcomes import DUPLICATE, EXPIRED, FAILED, HELD, PUSHED, Outcome
from relay.publish import Publisher, Push, job_replies, push_call
from tests.support.fakes import Clock, make_job, make_region


def test_a_push_call_carries_keys_then_arguments_in_job_order():
    pushes = [Push.of(make_job(i), "eu", rerouted=False) for i in (1, 2)]
    call = push_call("sha", 60, pushes)
    assert call[:3] == ["EVALSHA", "sha", "4"]
    assert call[3:7] == [pushes[0].dedup, pushes[0].queue, pushes[1].dedup, pushes[1].queue]
    assert call[7:] == ["60", pushes[0].job_json, pushes[0].expires_at,
                        pushes[1].job_json, pushes[1].expires_at]


def test_the_answer_is_read_per_job_and_a_call_error_is_every_jobs_error():
    expand = job_replies("eu", 3)
    assert expand([{"result": [1, "WRONGTYPE no", 2]}]) == [
        {"result": 1}, {"error": "WRONGTYPE no"}, {"result": 2}]
    assert expand([{"error": "OOM command not allowed"}]) == [
        {"error": "OOM command not allowed"}] * 3


@pytest.mark.parametrize("result", [1, [1, 1], [1, 1, 1, 1], [1, 7, 1], [1, True, 1],
                                    [1, None, 1], "OK"])
def test_an_answer_of_the_wrong_shape_is_malformed_never_guessed(result):
    with pytest.raises(MalformedReply, match="region eu: the push script answered"):
        job_replies("eu", 3)([{"result": result}])


async def test_requests_stay_under_the_byte_bound_and_each_job_gets_its_outcome():
    eu = make_region("eu", Clock())
    jobs = [make_job(i) for i in range(1, 11)]
    size = Push.of(jobs[0], "eu", rerouted=False).size
    eu.client.answer = lambda calls: [{"result": [1, 0, 2, "ERR x"][:int(c[2]) // 2]
                                       + [1] * max(0, int(c[2]) // 2 - 4)} for c in calls]
    outcomes = await Publisher(100 + 4 * size, 60).publish(eu, jobs, rerouted=False)
    # four jobs a request (four arguments each), then the last two
    assert [len(r[0]) for r in eu.client.requests] == [3 + 1 + 4 * 4] * 2 + [3 + 1 + 2 * 4]
    assert outcomes[:4] == [Outcome(PUSHED), Outcome(DUPLICATE), Outcome(EXPIRED),
                            Outcome(FAILED, "ERR x")]
    assert outcomes[8:] == [Outcome(PUSHED), Outcome(DUPLICATE)]


async def test_a_region_error_in_the_answer_holds_the_jobs():
    eu = make_region("eu", Clock())
    eu.client.answer = lambda calls: [{"result": ["READONLY replica"] * 3}]
    outcomes = await Publisher(1 << 20, 60).publish(eu, [make_job(i) for i in (1, 2, 3)],
                                                    rerouted=False)
    assert {o.kind for o in outcomes} == {HELD}

