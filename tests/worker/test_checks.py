"""One check, in process, against local HTTP targets: the connection goes to the address that
was checked (Host kept), names resolving to refused addresses and redirects to them are
refused before any connection, each error gets its class, retries follow the job."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from relay.local.embedded import free_port
from relay.worker.checks import Checker, CheckJob
from tests.support.queues import SCHEMA
from tests.support.worker import make_job


def job(url: str, **options) -> CheckJob:
    return CheckJob.parse(json.dumps(make_job(url, **options)))


def resolver_of(names: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return names[host]

    return resolve


@pytest.fixture
async def checker():
    c = Checker(allow_private=True)
    yield c
    await c.aclose()


async def test_the_connection_goes_to_the_checked_address_with_the_host_kept(targets):
    # the system resolver knows no pinned.example: only the checked address is used
    c = Checker(allow_private=True, resolver=resolver_of({"pinned.example": ["127.0.0.2"]}))
    try:
        tag = uuid.uuid4().hex
        result = await c.check(job(targets.url(f"/ok?{tag}", host="pinned.example")))
    finally:
        await c.aclose()
    assert (result.ok, result.status, result.address) == (True, 200, "127.0.0.2")
    (hit,) = targets.hits(tag)
    assert hit["local"] == "127.0.0.2"
    assert hit["host"] == f"pinned.example:{targets.port}"


@pytest.mark.parametrize(
    ("addresses", "private", "reason"),
    [
        (["10.0.0.5"], False, "private"),
        (["8.8.8.8", "127.0.0.1"], False, "loopback"),  # any refused address refuses
        (["::ffff:192.168.1.1"], False, "private"),
        (["169.254.169.254"], True, "metadata"),  # metadata even with private targets on
        (["64:ff9b::a9fe:a9fe"], True, "metadata"),
    ],
)
async def test_a_name_resolving_to_a_refused_address_is_never_connected_to(
    targets, addresses, private, reason
):
    c = Checker(allow_private=private, resolver=resolver_of({"looks.public.example": addresses}))
    try:
        tag = uuid.uuid4().hex
        result = await c.check(job(f"http://looks.public.example:{targets.port}/ok?{tag}"))
    finally:
        await c.aclose()
    assert (result.ok, result.error) == (False, "refused_target")
    assert result.detail.startswith(f"{reason}:"), result.detail
    assert result.address is None and targets.hits(tag) == []


async def test_the_system_resolver_is_checked_too():
    c = Checker(allow_private=False)
    try:
        address, refusal = await c.resolved_address("localhost", 80)
    finally:
        await c.aclose()
    assert address is None and refusal.reason == "loopback"


async def test_a_redirect_to_a_refused_target_is_not_followed(targets, checker):
    for target in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://metadata.google.internal/",
    ):
        result = await checker.check(job(targets.url(f"/redirect?to={target}")))
        assert (result.error, result.status) == ("refused_target", None), result
        assert "metadata" in result.detail


async def test_redirects_are_followed_to_allowed_targets_and_capped(targets, checker):
    tag = uuid.uuid4().hex
    final = targets.url(f"/ok?{tag}", host="127.0.0.3")
    result = await checker.check(job(targets.url(f"/redirect?to={final}")))
    assert (result.ok, result.status, result.address) == (True, 200, "127.0.0.3")
    (redirect, hit) = targets.hits(tag)  # the redirect's query holds the tag too
    assert (redirect["local"], hit["path"], hit["local"]) == ("127.0.0.1", "/ok", "127.0.0.3")
    loop = targets.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/ok")
    capped = Checker(allow_private=True, max_redirects=1)
    try:
        assert (await capped.check(job(loop))).error == "redirects"
    finally:
        await capped.aclose()
    # a redirect the job expects is its answer
    expected = await checker.check(job(targets.url(f"/redirect?to={final}"), expected=[302]))
    assert (expected.ok, expected.status) == (True, 302)


async def test_each_failure_has_its_class(targets, checker):
    closed = free_port()
    cases = {
        "status_mismatch": job(targets.url("/status/503")),
        "timeout": job(targets.url("/ok?ms=1500"), timeout_ms=300),
        "refused": job(f"http://127.0.0.1:{closed}/"),
        "tls": job(f"https://127.0.0.1:{targets.port}/ok"),  # TLS to a plain HTTP server
        "refused_target": job("http://169.254.169.254/"),
    }
    results = [await checker.check(check) for check in cases.values()]
    for error, result in zip(cases, results):
        assert (result.ok, result.error) == (False, error), result
    # each is a result as the contract's schema describes it (the ack's payload)
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(SCHEMA["$defs"]["result"])
    for result in [*results, await checker.check(job(targets.url("/ok")))]:
        validator.validate(json.loads(result.as_json()))
    dns = Checker(allow_private=True, resolver=resolver_of({}))
    try:
        assert (await dns.check(job("http://nowhere.example/"))).error == "dns"
    finally:
        await dns.aclose()


async def test_the_checks_own_retries_and_a_capped_body(targets):
    c = Checker(allow_private=True, max_body_bytes=1000)
    try:
        tag = uuid.uuid4().hex
        result = await c.check(job(targets.url(f"/status/500?{tag}"), max_attempts=3, delay_ms=10))
        assert (result.attempts, result.error, len(targets.hits(tag))) == (3, "status_mismatch", 3)
        big = await c.check(job(targets.url("/big?bytes=50000000"), timeout_ms=5000))
        assert (big.ok, big.status) == (True, 200)  # 50 MB never read: well within 5 s
    finally:
        await c.aclose()


def test_a_job_that_is_not_a_check_is_malformed():
    from relay.worker.checks import MalformedJob

    good = make_job("https://e.example/")
    for broken in (
        "[]",
        json.dumps({**good, "url": 5}),
        json.dumps({**good, "method": "TRACE"}),
        json.dumps({**good, "expected_status": []}),
        json.dumps({**good, "timeout_ms": "10"}),
        json.dumps({**good, "scheduled_for": "yesterday"}),
    ):
        with pytest.raises(MalformedJob):
            CheckJob.parse(broken)
