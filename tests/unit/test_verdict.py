"""`relay --once`'s one-line verdict on the jobs it left behind
(relay.delivery.service.once_verdict)."""

from __future__ import annotations

from relay.delivery.outbox import Undelivered
from relay.delivery.service import once_verdict
from tests.support.fakes import Clock, make_region


def test_everything_delivered_or_only_dead_letters():
    assert once_verdict([], {}, dead=0) is None
    assert once_verdict([], {}, dead=4) == (
        "4 job(s) failed their last attempt and were dead-lettered (pgpulse dlq list)"
    )


def test_a_refused_token_comes_first_then_each_region_in_order():
    clock = Clock()
    eu, us = make_region("eu-west-1", clock), make_region("us-east-1", clock)
    us.refused = "region us-east-1: token refused (HTTP 401)"
    eu.last_error = "region eu-west-1: HTTP 503"
    rows = [
        Undelivered("af-south-1", 2, 0),
        Undelivered("eu-west-1", 3, 3),
        Undelivered("us-east-1", 4, 0),
    ]
    verdict = once_verdict(rows, {"eu-west-1": eu, "us-east-1": us}, dead=1)
    assert verdict == (
        "region us-east-1: token refused (HTTP 401); check UPSTASH_REDIS_REST_TOKEN_US_EAST_1 "
        "(or UPSTASH_REDIS_REST_TOKEN); its jobs stay in the outbox"
        "; region af-south-1: no Upstash endpoint configured here, or no such region"
        "; region eu-west-1: 3 job(s) failed and wait for a later attempt "
        "(region eu-west-1: HTTP 503); 1 job(s) dead-lettered"
    )


def test_without_a_refused_token_the_line_counts_the_due_jobs():
    eu = make_region("eu-west-1", Clock())
    eu.breaker.trip()
    verdict = once_verdict([Undelivered("eu-west-1", 7, 0)], {"eu-west-1": eu}, dead=0)
    assert verdict == "7 due job(s) not delivered: region eu-west-1: breaker open"
