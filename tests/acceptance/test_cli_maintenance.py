"""`pgpulse maintenance` in a subprocess: add a one-off and a weekly window, see them in
`list` and `status`, skip slots, remove; bad input is one clear line and changes nothing."""

from __future__ import annotations

import json

from tests.support.cli import pgpulse
from tests.support.seeding import add_monitors, add_region


def test_maintenance_windows_from_the_cli(conn, db_url):
    add_region(conn, "us-east-1", is_default=True)
    a, b = [m["id"] for m in add_monitors(conn, 2, check_interval_seconds=20, due="2 seconds")]
    start, end = [
        r["t"].strftime("%Y-%m-%d %H:%M:%S")
        for r in conn.execute(
            "SELECT (now() AT TIME ZONE 'Asia/Tokyo') + d AS t "
            "FROM unnest(ARRAY[interval '-5 minutes', interval '1 hour']) d"
        )
    ]

    added = pgpulse(
        "maintenance",
        "add",
        "--json",
        "--tz",
        "Asia/Tokyo",
        "--name",
        "deploy",
        "--monitor",
        str(a),
        "--from",
        start,
        "--to",
        end,
        database_url=db_url,
    )
    assert added.returncode == 0, added.stderr
    once_id = json.loads(added.stdout)["id"]
    weekly = pgpulse(
        "maintenance",
        "add",
        "--tz",
        "Europe/Berlin",
        "--weekly",
        "sat,sun",
        "--at",
        "01:00",
        "--for",
        "2 hours",
        database_url=db_url,
    )
    assert weekly.returncode == 0 and "added" in weekly.stdout, weekly.stderr

    tick = pgpulse("tick", "--json", database_url=db_url)
    assert tick.returncode == 0, tick.stderr
    jobs = {r["monitor_id"] for r in conn.execute("SELECT monitor_id FROM pgpulse.outbox")}
    assert jobs == {b}

    listed = json.loads(pgpulse("maintenance", "list", "--json", database_url=db_url).stdout)
    once = next(w for w in listed if w["id"] == once_id)
    assert once["active_now"] and once["kind"] == "once" and once["skipped_slots"] >= 3
    assert [w["kind"] for w in listed] == ["once", "weekly"]
    status = pgpulse("status", database_url=db_url)
    assert status.returncode == 0, status.stderr
    assert "maintenance windows:" in status.stdout and "deploy" in status.stdout
    assert "ACTIVE until" in status.stdout and "weekly sat,sun at 01:00:00" in status.stdout

    removed = pgpulse("maintenance", "remove", str(once_id), database_url=db_url)
    assert removed.returncode == 0, removed.stderr
    assert (
        conn.execute("SELECT count(*) AS n FROM pgpulse.maintenance_windows").fetchone()["n"] == 1
    )


def test_bad_maintenance_input_is_one_line_and_changes_nothing(conn, db_url):
    cases = [
        (
            ["--tz", "Europe/Atlantis", "--from", "2026-01-01 00:00", "--to", "2026-01-01 01:00"],
            'unknown time zone "Europe/Atlantis"',
        ),
        (["--weekly", "sat,funday", "--at", "01:00", "--for", "1 hour"], "bad weekday 'funday'"),
        (["--from", "2026-01-01 00:00"], "needs both --from and --to"),
        (["--weekly", "sat", "--at", "01:00", "--for", "forever"], "invalid input syntax"),
        (["--monitor", " ", "--from", "2026-01-01", "--to", "2026-01-02"], "bad monitor id"),
    ]
    for args, message in cases:
        result = pgpulse("maintenance", "add", *args, database_url=db_url)
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    gone = pgpulse("maintenance", "remove", "42", database_url=db_url)
    assert gone.returncode == 1 and "no maintenance window 42" in gone.stderr
    assert (
        conn.execute("SELECT count(*) AS n FROM pgpulse.maintenance_windows").fetchone()["n"] == 0
    )
