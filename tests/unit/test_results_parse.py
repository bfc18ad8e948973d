"""A results list entry becomes a results_latest row, or a one-line reason it cannot be
stored as it is (one bad result never fails its batch)."""

from __future__ import annotations

import json

import pytest

from relay.delivery.results import Malformed, id_checker, parse_batch, parse_result

JOB_ID = "5d2f3c1e-6a0b-3f7e-9c1d-2b4a6e8f0a1c"
MONITOR = "0b6e9a3c-7d41-4c55-9a8e-2f1d3c4b5a69"


def entry(result=None, **fields) -> str:
    base = {
        "job_id": JOB_ID,
        "monitor_id": MONITOR,
        "region": "eu-west-1",
        "scheduled_for": "2026-11-29T19:30:17.250000Z",
        "worker": "host:1:abc",
        "acked_ms": 1,
        "result": {
            "ok": True,
            "status": 200,
            "latency_ms": 12.5,
            "error": None,
            "detail": "HTTP 200",
            "attempts": 1,
            "run": 1,
            "started_at": 1764444617.3,
            "finished_at": 1764444617.5,
        }
        if result is None
        else result,
    }
    return json.dumps(base | fields)


UUIDS = id_checker("uuid")


def test_an_entry_becomes_a_row_stored_under_its_slot():
    row = parse_result(entry(), "us-east-1", UUIDS)
    assert row["region"] == "eu-west-1" and row["checked_from"] == "us-east-1"
    assert row["scheduled_for"] == "2026-11-29T19:30:17.250000Z"
    assert row["finished_at"] == "2025-11-29T19:30:17.500000Z"
    assert row["started_at"] == "2025-11-29T19:30:17.300000Z"
    assert (row["ok"], row["status"], row["run"], row["slot_regions"]) == (True, 200, 1, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not JSON"),
        (entry(job_id="x"), "job_id is not a uuid"),
        (entry(monitor_id="42"), "is not an id of the product's type"),
        (entry(region="Bad Region"), "region is not a region code"),
        (entry(scheduled_for="yesterday"), "scheduled_for is not an ISO 8601 UTC time"),
        (entry(result="up"), "no result object"),
        (entry(result={"ok": "yes", "finished_at": 1.0}), "result.ok is not true or false"),
        (entry(result={"ok": True, "status": 42, "finished_at": 1.0}), "result.status"),
        (entry(result={"ok": True}), "result.finished_at is not a time"),
        (entry(result={"ok": True, "finished_at": float("inf")}), "finished_at is not a time"),
        (entry(result={"ok": True, "finished_at": 1.0, "error": "DROP TABLE"}), "error class"),
        (entry(monitor_id="a\x00b"), "holds a NUL character"),
        (entry(slot_regions=["eu-west-1", 7]), "slot_regions"),
    ],
)
def test_what_cannot_be_stored_is_named(text, reason):
    with pytest.raises(Malformed, match=reason):
        parse_result(text, "us-east-1", UUIDS)


def test_ids_are_checked_against_the_products_id_type():
    assert id_checker("bigint")("42") and not id_checker("bigint")("9" * 20)
    assert not id_checker("integer")(str(2**31)) and id_checker("integer")("-7")
    assert id_checker("text")("anything at all")
    assert parse_result(entry(monitor_id="42"), "us-east-1", id_checker("bigint"))["monitor_id"]


def test_a_detail_is_cut_and_a_batch_counts_what_it_skips():
    long = entry(result={"ok": False, "finished_at": 1.0, "detail": "x" * 2000})
    assert len(parse_result(long, "us-east-1", UUIDS)["detail"]) == 500
    parsed = parse_batch([entry(), "nope", entry(), entry(job_id="x")], "us-east-1", UUIDS)
    assert (len(parsed.rows), parsed.malformed) == (2, 2)
    assert parsed.first_problem.startswith("not JSON")
