"""`pgpulse bench first-check` as an operator runs it, small: 2,000 minute monitors, one run
of one minute under pg_cron (the real `pgpulse-tick` job; a minute is the least it takes).
Monitors created, re-activated and re-phased at random moments of that minute get their
first job at its slot, not from the next tick; every job reached Redis exactly once (the
benchmark fails otherwise)."""

from __future__ import annotations

import json

from tests.support.cli import pgpulse


def test_bench_first_check_under_pg_cron() -> None:
    result = pgpulse(
        "bench", "first-check", "--monitors", "2000", "--runs", "1", "--json", timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["bench"] == "first_check" and record["monitors"] == 2000
    # pg_cron ran the tick within the minute measured
    assert record["cron_ticks"] == 1 and record["cron_ticks_cut_short"] == 0
    assert record["first_slots"] == 60
    assert set(record["first_slot_late_max_ms_by_kind"]) == {"created", "reactivated", "rephased"}
    # a first slot left to the next tick is up to a minute late (tens of seconds for many
    # of these); on time, it is late only by the relay's own delay
    assert record["first_slot_late_max_ms"] < 15_000
    # each minute monitor has its one slot of the minute (20 were re-phased), plus the
    # slots of the changed ones; none published before its slot
    assert record["jobs"] >= 1980
    assert record["jobs_early"] == 0
    assert 0 <= record["jobs_within_50ms_pct"] <= record["jobs_within_250ms_pct"] <= 100
