"""A bulk write of the product (a statement of more than 500 rows) only appends its rows to
pgpulse.follow_log; a relay, woken by NOTIFY pgpulse_follow, follows them a moment later:
schedule rows, and first jobs at the slots they would have had."""

from __future__ import annotations

import time

from tests.support.activity import listening
from tests.support.seeding import follow_logged, outbox_jobs, tick
from tests.support.waiting import wait_for

BULK = """
INSERT INTO public.monitors (url, check_interval_seconds, next_check_at)
SELECT 'https://bulk.example/' || g, 20, %(due)s::timestamptz FROM generate_series(1, %(n)s) g
RETURNING id
"""


def _count(conn, sql: str, params=None) -> int:
    return conn.execute(sql, params).fetchone()["n"]


def _scheduled(conn, ids) -> int:
    return _count(
        conn, "SELECT count(*) AS n FROM pgpulse.schedule WHERE monitor_id = ANY (%s)", (ids,)
    )


def test_a_bulk_insert_pays_one_append_a_row_and_is_followed_after(conn, regions):
    tick(conn, lookahead_s=60)  # a tick ran lately: first slots within its horizon are written
    with conn.transaction():
        ids = [r["id"] for r in conn.execute(BULK, {"n": 600, "due": None}).fetchall()]
        # in the product's transaction: its rows are logged, nothing else is written
        assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 600
        assert _scheduled(conn, ids) == 0
        started = conn.execute("SELECT now() AS t").fetchone()["t"]
    assert follow_logged(conn) == 600
    assert _scheduled(conn, ids) == 600
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0
    # first slots on each one's grid from the product's write, not from the following
    firsts = conn.execute(
        "SELECT monitor_id, min(scheduled_for) AS first FROM pgpulse.outbox"
        " WHERE monitor_id = ANY (%s) GROUP BY monitor_id",
        (ids,),
    ).fetchall()
    assert len(firsts) == 600
    expected = {
        r["id"]: r["s"]
        for r in conn.execute(
            "SELECT id, pgpulse.next_slot(id, 20, %s) AS s FROM unnest(%s::uuid[]) id",
            (started, ids),
        ).fetchall()
    }
    assert all(f["first"] == expected[f["monitor_id"]] for f in firsts)
    assert follow_logged(conn) == 0  # nothing twice


def test_product_writes_after_a_bulk_insert_win_over_its_logged_rows(conn, regions):
    ids = [r["id"] for r in conn.execute(BULK, {"n": 600, "due": None}).fetchall()]
    gone, changed, renamed = ids[0], ids[1], ids[2]
    conn.execute("DELETE FROM public.monitors WHERE id = %s", (gone,))
    conn.execute(
        "UPDATE public.monitors SET url = 'https://changed.example/', check_interval_seconds = 60"
        " WHERE id = %s",
        (changed,),
    )
    new_id = conn.execute(
        "UPDATE public.monitors SET id = gen_random_uuid() WHERE id = %s RETURNING id", (renamed,)
    ).fetchone()["id"]
    # the deleted and the renamed rows' logged versions went with the product's writes; the
    # change and the new id wait behind the bulk insert (the log's order is each monitor's),
    # and are followed after it
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.schedule") == 0
    assert follow_logged(conn) == 600

    spec = conn.execute(
        "SELECT check_spec ->> 'url' AS url, check_interval_seconds AS iv FROM pgpulse.schedule"
        " WHERE monitor_id = %s",
        (changed,),
    ).fetchone()
    assert spec == {"url": "https://changed.example/", "iv": 60}
    assert _scheduled(conn, [gone, renamed]) == 0 and _scheduled(conn, [new_id]) == 1
    drift = conn.execute("SELECT * FROM pgpulse.drift()").fetchone()
    assert (drift["missing"], drift["orphaned"], drift["differing"]) == (0, 0, 0)

    conn.execute(BULK, {"n": 600, "due": None})
    conn.execute("TRUNCATE public.monitors")
    assert follow_logged(conn) == 0
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.schedule") == 0


def test_a_tick_follows_logged_rows_before_it_claims(conn, regions):
    ids = [
        r["id"]
        for r in conn.execute(
            BULK,
            {"n": 700, "due": "now"},  # due at once
        ).fetchall()
    ]
    run = tick(conn)
    assert run["monitors_claimed"] == 700
    assert all(outbox_jobs(conn, i) for i in ids[:5])


def test_a_relay_follows_a_bulk_insert_when_told(conn, db_url, regions, relays, queues):
    tick(conn, lookahead_s=60)
    relay = relays.start(poll_interval_s=30)
    wait_for(
        lambda: listening(conn) and relay.has_event("relay_started"),
        30,
        "the relay to listen",
        on_timeout=relay.tail,
    )
    started = time.monotonic()
    with conn.transaction():
        conn.execute(BULK, {"n": 800, "due": "now"})
    # the relay was woken (its poll is 30 s): it follows them and publishes their due
    # slots, no tick needed
    wait_for(lambda: queues.total() >= 800, 25, "the bulk insert's jobs", on_timeout=relay.tail)
    assert time.monotonic() - started < 6  # 5x margin under the poll interval
    assert relay.has_event("bulk_writes_followed", rows=800)
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0


def _timeouts(conn, ids) -> list[int]:
    return [
        r["t"]
        for r in conn.execute(
            "SELECT (check_spec ->> 'timeout_ms')::int AS t FROM pgpulse.schedule"
            " WHERE monitor_id = ANY (%s) ORDER BY monitor_id",
            (ids,),
        ).fetchall()
    ]


def test_a_bulk_update_pays_one_append_a_row_and_later_writes_follow_in_order(conn, regions):
    ids = [r["id"] for r in conn.execute(BULK, {"n": 600, "due": None}).fetchall()]
    follow_logged(conn)
    # a column pgpulse does not follow: nothing logged, nothing followed
    conn.execute("UPDATE public.monitors SET created_at = created_at - interval '1 day'")
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0
    # an ORM's full-row save of every row: no change, nothing logged
    conn.execute("UPDATE public.monitors SET url = url, timeout_ms = timeout_ms, id = id")
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0

    conn.execute("UPDATE public.monitors SET timeout_ms = 7000")  # 600 rows: logged
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 600
    assert set(_timeouts(conn, ids)) == {10000}  # not followed in the product's statement
    # a one-row write of a monitor behind it waits its turn: the bulk one must not win
    conn.execute("UPDATE public.monitors SET timeout_ms = 3000 WHERE id = %s", (ids[0],))
    assert follow_logged(conn) == 601
    timeouts = dict(zip(sorted(ids), _timeouts(conn, ids), strict=True))
    assert timeouts[ids[0]] == 3000
    assert sorted(set(timeouts.values())) == [3000, 7000]
    drift = conn.execute("SELECT * FROM pgpulse.drift()").fetchone()
    assert (drift["missing"], drift["orphaned"], drift["differing"]) == (0, 0, 0)

    # with nothing older waiting, a small UPDATE is followed in its own statement again
    conn.execute("UPDATE public.monitors SET timeout_ms = 2000 WHERE id = %s", (ids[1],))
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0
    assert dict(zip(sorted(ids), _timeouts(conn, ids), strict=True))[ids[1]] == 2000


def test_an_update_inside_another_statement_of_the_product_is_followed_on_its_own(conn, regions):
    """The flag that says an UPDATE named a followed column is per trigger depth: a product
    trigger's own UPDATE of another monitor, inside the statement, neither takes the outer
    statement's flag nor lends it its own."""
    a, sentinel = (r["id"] for r in conn.execute(BULK, {"n": 2, "due": None}).fetchall())
    conn.execute(
        """
        CREATE FUNCTION public.touch_sentinel() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE public.monitors SET created_at = now() WHERE id = %s;
            RETURN NULL;
        END $$;
        """.replace("%s", f"'{sentinel}'")
    )
    conn.execute(
        "CREATE TRIGGER touch_sentinel AFTER UPDATE ON public.monitors FOR EACH ROW"
        f" WHEN (NEW.id <> '{sentinel}') EXECUTE FUNCTION public.touch_sentinel()"
    )
    conn.execute("UPDATE public.monitors SET timeout_ms = 4321 WHERE id = %s", (a,))
    assert _timeouts(conn, [a]) == [4321]
    assert _count(conn, "SELECT count(*) AS n FROM pgpulse.follow_log") == 0
