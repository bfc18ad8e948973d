"""The soak's parts that need no service: the monitor mix, the per-monitor exactness
ledger, the verdict over the minutes, and the PNG it draws."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime

import pytest

from relay.bench.plot import Canvas, Panel, chart
from relay.bench.soak import (
    BOUNDS,
    MIX,
    Exactness,
    _IsoClock,
    failures,
    figures,
    judge,
    plan_mix,
    render_table,
    windows,
)


def test_the_mix_carries_the_rate_from_10_second_to_5_minute_monitors():
    classes = plan_mix(2000)
    assert abs(sum(c["jobs_per_s"] for c in classes) - 2000) < 5
    assert {c["interval_s"] for c in classes} == {10, 30, 60, 120, 300}
    assert any(c["regions"] == 3 for c in classes)
    # ids are consecutive ranges, one per class
    assert classes[0]["first"] == 1
    assert all(a["last"] + 1 == b["first"] for a, b in zip(classes, classes[1:]))
    assert len(classes) == len(MIX)


S = 1_000_000  # µs


def test_exactness_counts_lost_doubled_and_missing_slots_per_monitor():
    ledger = Exactness(monitors=3, regions=3)
    ledger.expect(1, 100 * S, 10, multi=False)
    ledger.expect(2, 105 * S, 60, multi=True)
    for slot in (100, 110, 120):  # monitor 1, whichever region routed it
        ledger.observe(1, slot % 3, slot * S)
    for region in range(3):
        ledger.observe(2, region, 105 * S)
    assert (ledger.lost, ledger.doubled, ledger.unexpected) == (0, 0, 0)
    assert ledger.caught_up(129 * S) and not ledger.caught_up(130 * S)

    ledger.observe(1, 0, 120 * S)  # again
    ledger.observe(1, 0, 150 * S)  # 130 and 140 never came
    ledger.observe(3, 0, 100 * S)  # no such monitor was scheduled
    ledger.observe(2, 1, 165 * S)  # region 1 of monitor 2: the next slot, on time
    assert (ledger.lost, ledger.doubled, ledger.unexpected) == (2, 1, 1)
    assert len(ledger.examples) == 3
    # at the end: region 0 and 2 of monitor 2 still wait for 165, monitor 1 for 160
    assert ledger.late(170 * S) == 3
    assert ledger.late(164 * S) == 1  # monitor 1's 160
    assert ledger.late(159 * S) == 0


def test_slot_times_are_read_to_the_microsecond():
    clock = _IsoClock()
    text = "2026-11-29T19:35:17.250001Z"
    expected = datetime(2026, 11, 29, 19, 35, 17, 250001, tzinfo=UTC)
    assert clock.us(text) == (expected - datetime(1970, 1, 1, tzinfo=UTC)) // (
        expected - expected.replace(microsecond=250000)
    )
    assert clock.us("2026-11-29T19:35:17.000000Z") == clock.us(text) - 250001


def _record(minutes, *, outbox=None, rss=None, cpu=None, lag=None, hold=None, lost=0):
    rows = [
        {
            "minute": k,
            "jobs": 60_000,
            "tick_max_s": 1.0,
            "wal_mb": 100.0,
            "tick_cut_short": False,
            "lag_p50_ms": 5.0,
            "lag_p99_ms": (lag or {}).get(k, 40.0),
            "cpu_us_per_job": (cpu or (lambda k: 60.0))(k),
            "held": bool(hold and hold[0] < k <= hold[1]),
        }
        for k in range(1, minutes + 1)
    ]
    levels = [
        {
            "outbox_mb": (outbox or (lambda k: 50.0))(k),
            "schedule_mb": 100.0,
            "relay_rss_mb": (rss or (lambda k: 80.0))(k),
            "redis_mb": 50.0,
        }
        for k in range(minutes + 1)
    ]
    return {
        "per_minute": rows,
        "levels": levels,
        "hold_open": {"from_minute": hold[0], "to_minute": hold[1]} if hold else None,
        "exactness": {"lost": lost, "doubled": 0, "unexpected": 0, "late_at_end": 0},
        "vacuum_alert_fired": bool(hold),
    }


def _verdicts(record) -> dict:
    return {c["name"]: c["ok"] for c in judge(record)}


def test_a_flat_run_passes_every_bound():
    verdicts = _verdicts(_record(30, hold=(10, 15)))
    assert all(verdicts.values()), verdicts
    assert "vacuum_alert" in verdicts


def test_growth_while_the_transaction_is_open_is_allowed_but_not_after():
    # the outbox doubles while vacuum is held back and stays there: a plateau again
    def plateau(k):
        return 50.0 + 50.0 * min(max(k - 10, 0), 5) / 5

    assert _verdicts(_record(30, outbox=plateau, hold=(10, 15)))["outbox_growth_mb_per_hour"]

    # still growing after the recovery: 2 MB a minute is 120 MB an hour, past 25% of ~100 + 8
    def growing(k):
        return plateau(k) + 2.0 * max(k - 18, 0)

    record = _record(30, outbox=growing, hold=(10, 15))
    record["checks"] = judge(record)
    assert _verdicts(record)["outbox_growth_mb_per_hour"] is False
    assert any(f.startswith("outbox_growth_mb_per_hour") for f in failures(record))


def test_cpu_rss_lag_and_lost_slots_each_fail_the_run():
    assert _verdicts(_record(30, cpu=lambda k: 60.0 + 0.5 * k))["cpu_per_job_growth_per_hour"] is (
        False
    )  # 30 µs an hour on 68: 44%
    assert _verdicts(_record(30, rss=lambda k: 80.0 + 1.0 * k))["relay_rss_mb_per_hour"] is False
    assert _verdicts(_record(30, lag={7: 400.0}))["lag_p99_ms"] is False
    # a lag spike while the transaction is open (or recovering) is not judged
    assert _verdicts(_record(30, lag={12: 900.0, 17: 400.0}, hold=(10, 15)))["lag_p99_ms"]
    assert _verdicts(_record(30, lost=1))["slots_lost"] is False


def test_what_an_open_transaction_left_behind_is_reported_not_judged():
    def schedule(k):
        return 100.0 if k <= 10 else 175.0  # bloated for good: a new plateau

    record = _record(30, hold=(10, 15))
    for k, level in enumerate(record["levels"]):
        level["schedule_mb"] = schedule(k)
    for row in record["per_minute"]:
        row["tick_cut_short"] = row["minute"] == 15  # the hold's last tick
    verdicts = _verdicts(record)
    assert verdicts["schedule_growth_mb_per_hour"] and verdicts["ticks_cut_short"]
    left = figures(record)["hold_left"]["schedule_mb"]
    assert (left["before"], left["during_max"], left["after"]) == (100.0, 175.0, 175.0)
    assert figures(record)["slopes"]["schedule_mb_per_hour"] == 0
    # outside the transaction a cut-short tick fails the run
    record["per_minute"][24]["tick_cut_short"] = True
    assert _verdicts(record)["ticks_cut_short"] is False


def test_short_runs_leave_slopes_unjudged_but_still_judge_exactness():
    verdicts = _verdicts(_record(2))
    assert verdicts["slots_lost"] and verdicts["slots_doubled"]
    assert verdicts["cpu_per_job_growth_per_hour"] is None
    assert verdicts["relay_rss_mb_per_hour"] is None
    text = render_table(
        _record(2)
        | {
            "rate_per_s": 500,
            "monitors": 50_000,
            "minutes": 2,
            "checks": judge(_record(2)),
            "passed": True,
            "out": "/tmp/x",
            "per_minute": [],
            "levels": [],
        }
    )
    assert "not judged" in text and "verdict: PASS" in text


def test_windows_leave_out_the_open_transaction_and_its_recovery():
    w = windows(30, (10, 15))
    assert 11 not in w["steady"] and 18 not in w["steady"] and 19 in w["steady"]
    assert w["after_hold"][0] == 18 and w["after_hold"][-1] == 30
    assert windows(5, None)["after_hold"] == [0, 1, 2, 3, 4, 5]
    assert BOUNDS["lag_p99_ms"] == 250


def _decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kind == b"IEND"
    width, height, depth, color_type = header[:4]
    assert (depth, color_type) == (8, 2)
    return width, height, zlib.decompress(idat)


def test_the_png_is_valid_and_draws_what_it_is_given():
    canvas = Canvas(4, 3)
    canvas.dot(1, 2, (10, 20, 30))
    width, height, raw = _decode_png(canvas.png())
    assert (width, height) == (4, 3) and len(raw) == 3 * (1 + 4 * 3)
    row = raw[2 * 13 : 3 * 13]
    assert row[0] == 0 and row[1 + 3 : 1 + 6] == bytes((10, 20, 30))

    png = chart(
        "soak",
        [Panel("lag", [1.0, 2.0, 3.0], [("p99", [10.0, None, 30.0])], "ms", bounds=[250])],
        columns=1,
    )
    width, height, raw = _decode_png(png)
    assert width == 600 and len(raw) == height * (1 + 3 * width)
    # the series' colour is on the canvas
    assert bytes((31, 100, 200)) in raw


@pytest.mark.parametrize("text", ["µs/job", "ÆØ"])
def test_unknown_characters_are_drawn_not_refused(text):
    assert Canvas(100, 10).text(0, 0, text) == 6 * len(text)
