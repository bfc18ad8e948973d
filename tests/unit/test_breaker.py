from relay.delivery.breaker import CircuitBreaker, State
from tests.support.fakes import Clock


def make(threshold=3, cooldown=10.0):
    clock = Clock()
    changes = []
    breaker = CircuitBreaker(
        threshold, cooldown, clock=clock, on_change=lambda old, new: changes.append((old, new))
    )
    return breaker, clock, changes


def test_opens_after_threshold_consecutive_failures_only():
    breaker, _, changes = make()
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    assert not breaker.allow()
    assert changes == [(State.CLOSED, State.OPEN)]


def test_half_open_admits_one_probe_then_closes_on_success():
    breaker, clock, changes = make()
    for _ in range(3):
        breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow()
    assert breaker.seconds_until_probe() > 0
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record_success()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert changes[-2:] == [(State.OPEN, State.HALF_OPEN), (State.HALF_OPEN, State.CLOSED)]


def test_failed_probe_reopens_for_a_full_cooldown():
    breaker, clock, _ = make(cooldown=5)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()


def test_open_for_spans_the_whole_incident_across_failed_probes():
    breaker, clock, _ = make(cooldown=1)
    assert breaker.open_for() == 0
    for _ in range(3):
        breaker.record_failure()
    for _ in range(5):  # probe, fail, reopen: still one incident
        clock.now += 1
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.open_for() == 5
    clock.now += 1
    assert breaker.allow()
    breaker.record_success()
    assert breaker.open_for() == 0


def half_open():
    breaker, clock, _ = make(cooldown=5)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    return breaker, clock


def test_a_probe_pass_given_back_unused_lets_the_next_caller_probe():
    breaker, _ = half_open()
    probe = breaker.allow()
    assert probe.probe and breaker.allow() is None
    breaker.release(probe)  # it reached nobody
    assert breaker.allow().probe


def test_a_probe_pass_given_back_after_an_attempt_frees_nothing():
    breaker, clock = half_open()
    first = breaker.allow()
    breaker.record_failure()  # the probe's attempt failed: open for a cooldown
    clock.now += 5
    second = breaker.allow()
    breaker.release(first)  # late: must not free the probe out now
    assert second.probe and breaker.allow() is None
