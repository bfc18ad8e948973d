"""The results tables (sql/90_results.sql) as the relay's role uses them: the ingest query's
winner rules (a newer slot, or the same slot finished later; the same batch again changes
nothing), the history's daily partitions (made ahead, dropped whole past retention, never a
DELETE, the settings checked), the latest table of deleted monitors cleaned, and the views
through the product's own table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from relay.queries import queries
from tests.support.dsn import as_user
from tests.support.seeding import add_monitors

ROLE = "pgpulse_relay"


@pytest.fixture
def relay(conn):
    """Statements on conn as the relay's role (the rights sql/roles.sql grants it); conn
    itself stays the product's superuser."""

    class Relay:
        def execute(self, *args):
            conn.execute(f"SET ROLE {ROLE}")
            try:
                return conn.execute(*args)
            finally:
                conn.execute("RESET ROLE")

    return Relay()


def row(monitor, slot: datetime, finished: datetime, *, region="us-east-1", ok=True, **more):
    return {
        "monitor_id": str(monitor["id"]),
        "region": region,
        "scheduled_for": slot.isoformat(),
        "checked_from": more.pop("checked_from", region),
        "job_id": "0b6e9a3c-7d41-4c55-9a8e-2f1d3c4b5a69",
        "slot_regions": more.pop("slot_regions", None),
        "ok": ok,
        "status": 200 if ok else 503,
        "latency_ms": 10.5,
        "error": None if ok else "status_mismatch",
        "detail": "",
        "attempts": 1,
        "run": more.pop("run", 1),
        "started_at": (finished - timedelta(seconds=1)).isoformat(),
        "finished_at": finished.isoformat(),
        "worker": "w1",
    }


def ingest(conn, rows, span=(None, None)) -> dict:
    return conn.execute(
        queries()["ingest_results"],
        {"rows": json.dumps(rows), "history_from": span[0], "history_until": span[1]},
    ).fetchone()


def maintain(conn) -> dict:
    return conn.execute(queries()["results_maintain"]).fetchone()


def test_the_latest_result_wins_and_the_same_batch_again_changes_nothing(conn, relay):
    m1, m2 = add_monitors(conn, 2)
    slot = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    done = slot + timedelta(seconds=2)
    first = [row(m1, slot, done), row(m1, slot, done + timedelta(seconds=1), ok=False, run=2)]
    got = ingest(relay, first + [row(m2, slot, done, region="eu-west-1")])
    assert (got["known"], got["latest_written"], got["history_written"]) == (3, 2, 0)
    latest = {
        (r["monitor_id"], r["region"]): r
        for r in conn.execute("SELECT * FROM pgpulse.results_latest").fetchall()
    }
    # the slot ran twice: the run that finished last is the one kept
    assert (latest[(m1["id"], "us-east-1")]["ok"], latest[(m1["id"], "us-east-1")]["run"]) == (
        False,
        2,
    )
    assert ingest(relay, first)["latest_written"] == 0  # again: nothing changes
    # an older slot never replaces a newer one; a newer one does
    older = [row(m1, slot - timedelta(minutes=1), done + timedelta(hours=1))]
    assert ingest(relay, older)["latest_written"] == 0
    newer = [row(m1, slot + timedelta(minutes=1), done + timedelta(minutes=1))]
    assert ingest(relay, newer)["latest_written"] == 1
    # a result of a monitor pgpulse does not schedule (deleted) is left out
    gone = {"id": "5d2f3c1e-6a0b-3f7e-9c1d-2b4a6e8f0a1c"}
    assert ingest(relay, [row(gone, slot, done)])["known"] == 0


def test_history_partitions_are_made_ahead_and_dropped_whole_past_retention(conn, relay):
    today = datetime.now(UTC).date()
    off = maintain(relay)
    assert (off["history"], off["covered_from"], off["created"]) == (False, None, 0)
    conn.execute("SET pgpulse.results_history = on")
    conn.execute("SET pgpulse.results_retention_days = 3")
    on = maintain(relay)
    assert (on["history"], on["retention_days"], on["created"], on["problem"]) == (
        True,
        3,
        5,
        None,
    )
    assert on["covered_from"] == datetime(today.year, today.month, today.day, tzinfo=UTC) - (
        timedelta(days=1)
    )
    assert on["covered_until"] == on["covered_from"] + timedelta(days=5)
    names = partitions(conn)
    assert names == [f"results_history_{(today + timedelta(days=d)):%Y%m%d}" for d in range(-1, 4)]
    # results go into their day's partition, once per slot; outside the span: counted
    (m,) = add_monitors(conn, 1)
    slot = datetime.now(UTC).replace(microsecond=0)
    span = (on["covered_from"], on["covered_until"])
    rows = [row(m, slot, slot), row(m, slot - timedelta(days=3), slot)]
    got = ingest(relay, rows, span)
    assert (got["history_written"], got["outside_history"]) == (1, 1)
    assert ingest(relay, rows, span)["history_written"] == 0

    # partitions older than retention are dropped (as their owner: the relay cannot)
    old = today - timedelta(days=4)
    conn.execute(
        f"CREATE TABLE pgpulse.results_history_{old:%Y%m%d} PARTITION OF pgpulse.results_history"
        f" FOR VALUES FROM ('{old}') TO ('{old + timedelta(days=1)}')"
    )
    conn.execute(f"ALTER TABLE pgpulse.results_history_{old:%Y%m%d} OWNER TO pgpulse_owner")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        relay.execute(f"DROP TABLE pgpulse.results_history_{old:%Y%m%d}")
    again = maintain(relay)
    assert (again["created"], again["dropped"]) == (0, 1)
    assert partitions(conn) == names
    # the span reaches back as far as partitions go without a gap
    conn.execute("SET pgpulse.results_retention_days = 14")
    before = today - timedelta(days=2)
    conn.execute(
        f"CREATE TABLE pgpulse.results_history_{before:%Y%m%d} PARTITION OF "
        f"pgpulse.results_history FOR VALUES FROM ('{before}') TO ('{before + timedelta(days=1)}')"
    )
    assert maintain(relay)["covered_from"].date() == before


def test_bad_history_settings_are_named_and_their_defaults_used(conn, relay):
    conn.execute("SET pgpulse.results_history = maybe")
    conn.execute("SET pgpulse.results_retention_days = forever")
    got = maintain(relay)
    assert (got["history"], got["retention_days"]) == (False, 14)
    assert got["problem"] == (
        'the setting pgpulse.results_history must be on or off, not "maybe"; the setting '
        'pgpulse.results_retention_days must be 1 to 3650 (days), not "forever"'
    )


def test_latest_results_of_deleted_monitors_go(conn, relay):
    m1, m2 = add_monitors(conn, 2)
    slot = datetime.now(UTC).replace(microsecond=0)
    ingest(relay, [row(m1, slot, slot), row(m2, slot, slot)])
    conn.execute("DELETE FROM public.monitors WHERE id = %s", (m1["id"],))
    assert relay.execute(queries()["results_orphans"], {"limit": 100}).fetchone()["deleted"] == 1
    left = conn.execute("SELECT monitor_id FROM pgpulse.results_latest").fetchall()
    assert [r["monitor_id"] for r in left] == [m2["id"]]


def test_the_views_show_a_role_its_monitors_only(conn, db_url):
    m1, m2 = add_monitors(conn, 2)
    slot = datetime.now(UTC).replace(microsecond=0)
    regions = ["eu-west-1", "us-east-1"]
    ingest(
        conn,
        [
            row(m1, slot, slot, region="us-east-1", slot_regions=regions),
            row(m1, slot, slot, region="eu-west-1", ok=False, slot_regions=regions),
            row(m1, slot - timedelta(minutes=1), slot, region="ap-south-1"),
            row(m2, slot, slot),
        ],
    )
    slots = {r["monitor_id"]: r for r in conn.execute("SELECT * FROM pgpulse.latest_slot_results")}
    assert (
        slots[m1["id"]]["regions_expected"],
        slots[m1["id"]]["regions_reported"],
        slots[m1["id"]]["regions_ok"],
        slots[m1["id"]]["regions_failing"],
        slots[m1["id"]]["all_ok"],
    ) == (2, 2, 1, ["eu-west-1"], False)
    assert slots[m2["id"]]["all_ok"] and slots[m2["id"]]["regions_expected"] == 1
    # a product role that may see one monitor (its row-level security) sees its results only
    conn.execute("""
        CREATE ROLE results_reader LOGIN;
        GRANT SELECT ON public.monitors TO results_reader;
        GRANT SELECT ON pgpulse.results_latest, pgpulse.results_history TO results_reader;
        GRANT SELECT ON pgpulse.latest_results, pgpulse.latest_slot_results,
                        pgpulse.slot_results TO results_reader;
        ALTER TABLE public.monitors ENABLE ROW LEVEL SECURITY;""")
    conn.execute(
        "CREATE POLICY only_one ON public.monitors TO results_reader USING (id = %s)"
        % psycopg.sql.Literal(m2["id"]).as_string(conn)
    )
    try:
        reader = psycopg.connect(
            as_user(db_url, "results_reader"), autocommit=True, row_factory=dict_row
        )
        with reader:
            seen = reader.execute("SELECT monitor_id FROM pgpulse.latest_results").fetchall()
            assert [r["monitor_id"] for r in seen] == [m2["id"]]
            assert len(reader.execute("SELECT * FROM pgpulse.latest_slot_results").fetchall()) == 1
    finally:
        conn.execute("DROP POLICY only_one ON public.monitors")
        conn.execute("ALTER TABLE public.monitors DISABLE ROW LEVEL SECURITY")
        conn.execute("DROP OWNED BY results_reader")
        conn.execute("DROP ROLE results_reader")


def partitions(conn) -> list[str]:
    return [
        r["relname"]
        for r in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'pgpulse.results_history'::regclass ORDER BY 1"
        )
    ]
