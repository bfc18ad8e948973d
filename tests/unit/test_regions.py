"""Which region takes a region's jobs while its breaker is open (relay.delivery.regions)."""

from __future__ import annotations

from relay.delivery.breaker import State
from tests.support.fakes import Clock, FakeStore, make_region, make_registry


def trip(region) -> None:
    region.breaker.trip()
    assert region.breaker.state is State.OPEN


def test_the_fallback_region_first_then_the_default():
    clock = Clock()
    eu = make_region("eu", clock, fallback="ap")
    ap, us = make_region("ap", clock), make_region("us", clock, is_default=True)
    registry = make_registry(FakeStore(), eu, ap, us)
    assert registry.fallback_for(eu) is ap
    trip(ap)
    assert registry.fallback_for(eu) is us
    ap.breaker.record_success()
    ap.enabled = False  # an operator took it out
    assert registry.fallback_for(eu) is us
    trip(us)
    assert registry.fallback_for(eu) is None


def test_a_region_never_falls_back_to_itself_and_an_unknown_fallback_means_the_default():
    clock = Clock()
    us = make_region("us", clock, is_default=True)
    eu = make_region("eu", clock, fallback="us")
    registry = make_registry(FakeStore(), us, eu)
    assert registry.fallback_for(us) is None  # never itself
    assert registry.fallback_for(eu) is us
    eu.fallback = "gone"  # a fallback this relay has no endpoint for: the default
    assert registry.fallback_for(eu) is us


def test_a_success_clears_a_refused_token_and_closes_the_breaker():
    clock = Clock()
    eu = make_region("eu", clock)
    eu.refused = "region eu: token refused (HTTP 401)"
    trip(eu)
    clock.now += eu.breaker.cooldown
    assert eu.breaker.allow().probe
    eu.attempted(True)
    assert eu.breaker.state is State.CLOSED and eu.refused is None and eu.succeeded
