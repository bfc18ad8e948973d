"""The worker's own URL rule runs the same vectors as pgpulse.url_problem
(tests/support/url_vectors.json and the generated Unicode ones), and the address rule
refuses what a resolved host may point at, IPv4 inside IPv6 included."""

from __future__ import annotations

import ipaddress

import pytest

from relay.worker.targets import address_problem, url_host_address, url_problem
from tests.support.url_vectors import file_vectors, unicode_vectors


@pytest.mark.parametrize("private", [False, True], ids=["private-off", "private-on"])
def test_the_worker_follows_the_vectors_file(private):
    wrong = []
    for v in file_vectors():
        allowed = v.allowed_on if private else v.allowed_off
        refusal = url_problem(v.url, private)
        if allowed != (refusal is None) or (refusal is not None and refusal.reason != v.reason):
            wrong.append((v.url, v.reason, refusal))
    assert wrong == []


def test_every_character_idna_maps_or_drops_is_refused_in_a_host():
    vectors = unicode_vectors()
    assert len(vectors) > 4 * 6000
    for private in (False, True):
        wrong = [
            (v.url, r)
            for v in vectors
            if (r := url_problem(v.url, private)) is None
            or not (r.reason == "not-ascii" or "whitespace" in r.message)
        ]
        assert wrong == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.0.1", "private"),
        ("192.168.0.10", "private"),
        ("100.64.1.1", "private"),
        ("fd00::5", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.5", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped: checked as the IPv4 address
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 (DNS64 answers with these)
        ("2002:c0a8:101::1", "private"),  # 6to4
        ("169.254.169.254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_resolved_addresses_that_are_refused(address, reason):
    refusal = address_problem(ipaddress.ip_address(address), False, "target.example")
    assert refusal is not None and refusal.reason == reason
    assert "target.example" in refusal.message
    on = address_problem(ipaddress.ip_address(address), True)
    assert (on is not None) == (reason == "metadata")  # metadata: always refused


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address), False) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("10.0.0.1.", "10.0.0.1"),
        ("example.com", None),
    ],
)
def test_a_url_host_in_any_ip_spelling_is_connected_to_as_that_address(host, address):
    found = url_host_address(host)
    assert (str(found) if found else None) == address
