"""Bad region rows are refused by the database, with an error that names the problem (the
constraint's name says what is wrong). A monitor pgpulse cannot schedule is not refused:
the product's write succeeds, and pgpulse parks the monitor (pgpulse.schedule.parked, one
line naming the problem) until it is fixed."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from relay import migrate
from tests.support.seeding import add_region, outbox_jobs, schedule_of, tick

GOOD = {"url": "https://example.com/health", "check_interval_minutes": 5}


def insert(conn, table: str, row: dict) -> None:
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
        list(row.values()),
    )


def insert_monitor(conn, row: dict):
    """Inserts a product row; returns its id."""
    return conn.execute(
        f"INSERT INTO public.monitors ({', '.join(row)}) "
        f"VALUES ({', '.join(['%s'] * len(row))}) RETURNING id",
        list(row.values()),
    ).fetchone()["id"]


def parked(conn, monitor_id) -> str | None:
    """Why pgpulse does not schedule the monitor (None: it does)."""
    return schedule_of(conn, [monitor_id])[monitor_id]["parked"]


def jobs_after_a_tick(conn, monitor_id) -> list:
    """The monitor's jobs after time passed (all monitors due) and a tick ran."""
    conn.execute("UPDATE pgpulse.schedule SET next_check_at = now() - interval '1 second'")
    tick(conn, lookahead_s=60)
    return outbox_jobs(conn, monitor_id)


@pytest.fixture(autouse=True)
def region(conn) -> None:
    insert(conn, "pgpulse.regions", {"code": "us-east-1", "is_default": True})


# the product's defaults of the columns the cases below change
FIXED = {
    "check_interval_minutes": 5,
    "criticality": "normal",
    "method": "GET",
    "timeout_ms": 10000,
    "expected_status": [200],
    "check_retries": 1,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"check_interval_minutes": 0}, "interval: 0 s is not 10 s to 1 day"),
        ({"check_interval_minutes": 1441}, "interval: 86460 s is not 10 s to 1 day"),
        ({"check_interval_minutes": -5}, "interval: -300 s is not 10 s to 1 day"),
        ({"criticality": "urgent"}, "criticality: 'urgent' is not critical, high, normal or low"),
        (
            {"criticality": "CRITICAL"},
            "criticality: 'CRITICAL' is not critical, high, normal or low",
        ),
        ({"method": "FETCH"}, "method: 'FETCH' is not an HTTP method"),
        ({"timeout_ms": 50}, "timeout_ms: 50 is not 100 to 120000"),
        ({"expected_status": [200, 700]}, "expected_status: not 1 to 32 HTTP statuses"),
        ({"expected_status": []}, "expected_status: not 1 to 32 HTTP statuses"),
        ({"check_retries": 9}, "check_retries: 9 is not 0 to 5"),
    ],
)
def test_bad_monitor_is_parked_naming_the_problem(conn, change, reason):
    """Once refused with a CHECK violation; now the product's write succeeds, the monitor
    is parked with the reason and gets no job, and fixing the value schedules it again."""
    monitor_id = insert_monitor(conn, GOOD | change)
    assert parked(conn, monitor_id) == reason
    assert jobs_after_a_tick(conn, monitor_id) == []
    conn.execute(
        f"UPDATE public.monitors SET {', '.join(f'{c} = %s' for c in change)} WHERE id = %s",
        [*(FIXED[c] for c in change), monitor_id],
    )
    assert parked(conn, monitor_id) is None
    assert jobs_after_a_tick(conn, monitor_id)


def test_unknown_preferred_region_is_accepted_and_routed_round_robin(conn):
    """Once refused by a foreign key; pgpulse no longer constrains the product's table. A
    monitor that allows fallback and prefers a region pgpulse does not have is scheduled
    (not parked) and goes round-robin."""
    monitor_id = insert_monitor(conn, GOOD | {"preferred_region": "mars-1"})
    assert parked(conn, monitor_id) is None
    assert [j["region"] for j in jobs_after_a_tick(conn, monitor_id)] == ["us-east-1"]


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("url", None, psycopg.errors.NotNullViolation),
        ("check_interval_minutes", None, psycopg.errors.NotNullViolation),
        ("criticality", None, psycopg.errors.NotNullViolation),
    ],
)
def test_missing_required_values_are_refused(conn, column, value, error):
    with pytest.raises(error) as info:
        insert(conn, "public.monitors", GOOD | {column: value})
    assert info.value.diag.column_name == column


def test_bad_interval_with_an_explicit_next_check_at_is_parked(conn):
    monitor_id = conn.execute(
        "INSERT INTO public.monitors (url, check_interval_minutes, next_check_at) "
        "VALUES ('https://example.com/', 0, now()) RETURNING id"
    ).fetchone()["id"]
    assert parked(conn, monitor_id) == "interval: 0 s is not 10 s to 1 day"
    assert jobs_after_a_tick(conn, monitor_id) == []


def test_bad_update_parks_too(conn):
    monitor_id = insert_monitor(conn, GOOD)
    assert len(jobs_after_a_tick(conn, monitor_id)) == 1
    conn.execute("UPDATE public.monitors SET check_interval_minutes = 0")
    assert parked(conn, monitor_id) == "interval: 0 s is not 10 s to 1 day"
    assert outbox_jobs(conn, monitor_id) == []  # its waiting job went
    assert jobs_after_a_tick(conn, monitor_id) == []
    conn.execute("UPDATE public.monitors SET check_interval_minutes = 5")
    assert parked(conn, monitor_id) is None
    assert jobs_after_a_tick(conn, monitor_id)


@pytest.mark.parametrize(
    "change",
    [
        {"check_interval_minutes": 1},
        {"check_interval_minutes": 1440},
        {"url": "https://status.example.com:8443/health?deep=1#x"},
        {"url": "https://example.com"},
        {
            "criticality": "critical",
            "preferred_region": "us-east-1",
            "method": "HEAD",
            "timeout_ms": 120000,
            "expected_status": [200, 301, 599],
            "check_retries": 0,
        },
    ],
)
def test_good_monitor_is_accepted_with_defaults(conn, change):
    monitor_id = insert_monitor(conn, GOOD | change)
    row = conn.execute("SELECT * FROM public.monitors").fetchone()
    for column, value in change.items():
        assert row[column] == value
    defaults = {
        "method": "GET",
        "timeout_ms": 10000,
        "expected_status": [200],
        "criticality": "normal",
        "is_active": True,
        "allow_fallback": True,
    }
    for column, value in defaults.items():
        if column not in change:
            assert row[column] == value
    # scheduled by pgpulse (the product's own next_check_at is left as written)
    held = schedule_of(conn, [monitor_id])[monitor_id]
    assert held["parked"] is None and held["next_check_at"] is not None


@pytest.mark.parametrize(
    ("row", "constraint"),
    [
        ({"code": "US East"}, "region_code_format"),
        ({"code": "-east"}, "region_code_format"),
        ({"code": "eu-west-1", "weight": 101}, "region_weight_0_to_100"),
        ({"code": "eu-west-1", "fallback_region": "eu-west-1"}, "region_fallback_not_self"),
    ],
)
def test_bad_region_is_refused_naming_the_problem(conn, row, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        insert(conn, "pgpulse.regions", row)
    assert info.value.diag.constraint_name == constraint


def test_only_one_default_region(conn):
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        insert(conn, "pgpulse.regions", {"code": "eu-west-1", "is_default": True})
    assert info.value.diag.constraint_name == "regions_single_default"


# ------------------------------------------------------------------ monitor URLs
# Regional workers fetch a monitor's URL: pgpulse refuses what is malformed, and targets off
# the public internet unless the database allows them (pgpulse.allow_private_targets).

PRIVATE_ONLY = "(allowed only with pgpulse.allow_private_targets = on)"
PARK = "9999-12-31 23:59:59+00"


REFUSED = [
    ("", "must start with http:// or https://"),
    ("example.com", "must start with http:// or https://"),
    ("http:/example.com", "must start with http:// or https://"),
    ("ftp://example.com/file", "scheme ftp, not http or https"),
    ("javascript:alert(1)", "scheme javascript, not http or https"),
    ("HTTPS://example.com/", "scheme HTTPS in lower case, please (http or https)"),
    ("https://", "no host"),
    ("http://:80/", "no host"),
    ("http://example.com:99999/", "port 99999 out of range 1-65535"),
    ("http://example.com:0/", "port 0 out of range 1-65535"),
    ("http://example.com:99999999999999999999/", "port 99999999999999999999 out of range 1-65535"),
    ("http://example.com:/x", 'empty port after ":" (give 1-65535 or none)'),
    ("http://example.com:8o/", 'port "8o" is not a number 1-65535'),
    ("https://exa mple.com/", "has whitespace or control characters"),
    ("https://example.com/\x01", "has whitespace or control characters"),
    ("https://example.com/\r\nX-Injected: 1", "has whitespace or control characters"),
    ("https://example.com/\u2028", "has whitespace or control characters"),
    ("http://example.com\\@127.0.0.1/", "has a backslash (write it as %5C)"),
    (
        "http://user:secret@example.com/",
        "has a user name or password before the host (userinfo is refused)",
    ),
    (
        "http://example.com@127.0.0.1/",
        "has a user name or password before the host (userinfo is refused)",
    ),
    ("https://example.com/" + "a" * 2100, "2120 characters long, over the limit of 2048"),
    ("http://a..b/", "host a..b has an empty label"),
    ("http://%31%32%37.0.0.1/", "host %31%32%37.0.0.1 has characters a host name cannot have"),
    ("http://256.1.1.1/", "host 256.1.1.1 is not an IPv4 address"),
    ("http://08.1.1.1/", "host 08.1.1.1 is not an IPv4 address"),
    ("http://[fe80::1%25eth0]/", "host [fe80::1%25eth0] is not an IPv6 address"),
    ("http://[::1/", "an IPv6 address without its closing bracket"),
    # cloud metadata: always, in every spelling
    (
        "http://169.254.169.254/latest/meta-data/",
        "host 169.254.169.254 is a cloud metadata endpoint (always refused)",
    ),
    (
        "http://2852039166/",
        "host 2852039166 is 169.254.169.254, a cloud metadata endpoint (always refused)",
    ),
    (
        "http://[::ffff:169.254.169.254]/",
        "host [::ffff:169.254.169.254] is 169.254.169.254, a cloud metadata endpoint (always refused)",
    ),
    (
        "http://[fd00:ec2::254]/",
        "host [fd00:ec2::254] is a cloud metadata endpoint (always refused)",
    ),
    (
        "http://metadata.google.internal/computeMetadata/v1/",
        "host metadata.google.internal is a cloud metadata endpoint (always refused)",
    ),
    # loopback, link-local, unspecified, private: by default
    ("http://localhost:6379/", f"host localhost is loopback {PRIVATE_ONLY}"),
    ("http://LocalHost./", f"host LocalHost. is loopback {PRIVATE_ONLY}"),
    ("http://api.localhost/", f"host api.localhost is loopback {PRIVATE_ONLY}"),
    ("http://127.0.0.1:6379/", f"host 127.0.0.1 is loopback {PRIVATE_ONLY}"),
    ("http://0x7f.1/", f"host 0x7f.1 is 127.0.0.1, loopback {PRIVATE_ONLY}"),
    ("http://0177.0.0.1/", f"host 0177.0.0.1 is 127.0.0.1, loopback {PRIVATE_ONLY}"),
    ("http://127.1/", f"host 127.1 is 127.0.0.1, loopback {PRIVATE_ONLY}"),
    ("http://2130706433/", f"host 2130706433 is 127.0.0.1, loopback {PRIVATE_ONLY}"),
    (
        "http://１２７。０。０。１/",
        "host <U+FF11><U+FF12><U+FF17><U+3002><U+FF10><U+3002><U+FF10><U+3002><U+FF11> is not "
        "ASCII (store an internationalised name in its A-label form, xn--...)",
    ),
    ("http://[::1]:8080/", f"host [::1] is loopback {PRIVATE_ONLY}"),
    (
        "http://[::ffff:127.0.0.1]/",
        f"host [::ffff:127.0.0.1] is 127.0.0.1, loopback {PRIVATE_ONLY}",
    ),
    ("http://[::ffff:7f00:1]/", f"host [::ffff:7f00:1] is 127.0.0.1, loopback {PRIVATE_ONLY}"),
    ("http://169.254.10.1/", f"host 169.254.10.1 is link-local {PRIVATE_ONLY}"),
    ("http://[fe80::1]/", f"host [fe80::1] is link-local {PRIVATE_ONLY}"),
    ("http://0.0.0.0/", f"host 0.0.0.0 is the unspecified address {PRIVATE_ONLY}"),
    ("http://0/", f"host 0 is 0.0.0.0, the unspecified address {PRIVATE_ONLY}"),
    ("http://[::]/", f"host [::] is the unspecified address {PRIVATE_ONLY}"),
    ("http://10.0.0.7:8080/health", f"host 10.0.0.7 is private {PRIVATE_ONLY}"),
    ("http://172.16.1.1/", f"host 172.16.1.1 is private {PRIVATE_ONLY}"),
    ("http://192.168.1.1/", f"host 192.168.1.1 is private {PRIVATE_ONLY}"),
    ("http://100.64.0.1/", f"host 100.64.0.1 is private {PRIVATE_ONLY}"),
    ("http://[fd12::1]/", f"host [fd12::1] is private {PRIVATE_ONLY}"),
    ("http://224.0.0.1/", f"host 224.0.0.1 is multicast {PRIVATE_ONLY}"),
    ("http://255.255.255.255/", f"host 255.255.255.255 is reserved {PRIVATE_ONLY}"),
    ("http://db.internal/", f"host db.internal is a private network name {PRIVATE_ONLY}"),
    ("http://printer.local/", f"host printer.local is a private network name {PRIVATE_ONLY}"),
]


def test_refused_url_names_the_problem_in_one_line(conn):
    """Every form, on INSERT and on UPDATE (one database for all: a clone per case costs
    half a second): the write succeeds and the monitor is parked, the reason naming the
    URL's problem in one line."""
    updated = insert_monitor(conn, GOOD)
    wrong = []
    for url, problem in REFUSED:
        inserted = insert_monitor(conn, {"url": url})
        conn.execute("UPDATE public.monitors SET url = %s WHERE id = %s", (url, updated))
        for statement, monitor_id in (("INSERT", inserted), ("UPDATE", updated)):
            if parked(conn, monitor_id) != f"url: {problem}":
                wrong.append((statement, url, parked(conn, monitor_id)))
    assert wrong == []
    assert jobs_after_a_tick(conn, None) == []
    # fixed: scheduled again
    conn.execute("UPDATE public.monitors SET url = %s WHERE id = %s", (GOOD["url"], updated))
    assert parked(conn, updated) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com:8443/x?y=1",
        "https://Example.COM/",
        "https://xn--bcher-kva.example/",  # punycode
        "http://[2606:4700:4700::1111]:8080/dns",  # a public IPv6 literal
        "http://8.8.8.8/",
        "http://1.2.3.4.nip.io/",  # a name: what it resolves to is the worker's check
        "https://example.com/path?q=a@b#frag",  # "@" after the host is no userinfo
    ],
)
def test_normal_url_is_accepted(conn, url):
    assert conn.execute("SELECT pgpulse.url_problem(%s) AS p", (url,)).fetchone()["p"] is None
    monitor_id = insert_monitor(conn, GOOD | {"url": url})
    held = schedule_of(conn, [monitor_id])[monitor_id]
    assert held["parked"] is None and held["check_spec"]["url"] == url


def connect(db_url: str) -> psycopg.Connection:
    """A new session: ALTER DATABASE ... SET reaches sessions that start after it."""
    return psycopg.connect(db_url, autocommit=True, row_factory=dict_row)


def allow_private(conn, value: str | None) -> None:
    name = conn.execute("SELECT current_database() AS d").fetchone()["d"]
    if value is None:
        conn.execute(f"ALTER DATABASE {name} RESET pgpulse.allow_private_targets")
    else:
        conn.execute(f"ALTER DATABASE {name} SET pgpulse.allow_private_targets = {value}")


def test_private_targets_switch_works_both_ways(conn, db_url):
    private = {"url": "http://10.0.0.7:8080/health"}
    refused = insert_monitor(conn, GOOD | private)
    assert parked(conn, refused) == f"url: host 10.0.0.7 is private {PRIVATE_ONLY}"
    conn.execute("DELETE FROM public.monitors WHERE id = %s", (refused,))

    allow_private(conn, "on")
    with connect(db_url) as on:
        insert(on, "public.monitors", GOOD | private)
        insert(on, "public.monitors", GOOD | {"url": "http://localhost:6379/"})
        metadata = insert_monitor(on, GOOD | {"url": "http://169.254.169.254/"})
        assert "cloud metadata endpoint" in parked(on, metadata)
        on.execute("DELETE FROM public.monitors WHERE id = %s", (metadata,))
        assert on.execute("SELECT count(*) AS n FROM public.monitors").fetchone()["n"] == 2
        tick(on, lookahead_s=600)
        assert (
            on.execute("SELECT count(DISTINCT monitor_id) AS n FROM pgpulse.outbox").fetchone()["n"]
            == 2
        )

    # a setting that is neither on nor off fails no product write: the row is parked, naming it
    allow_private(conn, "maybe")
    with connect(db_url) as bad:
        odd = insert_monitor(bad, GOOD)
        assert 'must be on or off, not "maybe"' in parked(bad, odd)
        bad.execute("DELETE FROM public.monitors WHERE id = %s", (odd,))

    # off again: new private URLs are refused, and a recheck parks the ones there
    allow_private(conn, None)
    with connect(db_url) as off:
        refused = insert_monitor(off, GOOD | {"url": "http://10.0.0.8/"})
        assert parked(off, refused) == f"url: host 10.0.0.8 is private {PRIVATE_ONLY}"
        off.execute("DELETE FROM public.monitors WHERE id = %s", (refused,))
        assert off.execute("SELECT * FROM pgpulse.recheck_monitor_urls()").fetchone() == {
            "parked": 2,
            "resumed": 0,
        }
        assert off.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0
        problems = off.execute(
            "SELECT url, problem, parked FROM pgpulse.monitor_url_problems() ORDER BY url"
        ).fetchall()
        assert problems == [
            {
                "url": "http://10.0.0.7:8080/health",
                "parked": True,
                "problem": f"url: host 10.0.0.7 is private {PRIVATE_ONLY}",
            },
            {
                "url": "http://localhost:6379/",
                "parked": True,
                "problem": f"url: host localhost is loopback {PRIVATE_ONLY}",
            },
        ]

    # and on again: the recheck schedules them again
    allow_private(conn, "on")
    with connect(db_url) as on:
        assert on.execute("SELECT * FROM pgpulse.recheck_monitor_urls()").fetchone() == {
            "parked": 0,
            "resumed": 2,
        }
        assert (
            on.execute(
                "SELECT count(*) AS n FROM pgpulse.schedule "
                "WHERE parked IS NULL AND next_check_at <= now() + interval '5 minutes'"
            ).fetchone()["n"]
            == 2
        )


def test_a_parked_monitor_is_never_due_until_its_url_is_fixed(conn, db_url):
    allow_private(conn, "on")
    with connect(db_url) as on:
        insert(
            on,
            "public.monitors",
            GOOD | {"url": "http://127.0.0.1:8080/", "check_interval_minutes": 1},
        )
    insert(
        conn, "public.monitors", GOOD | {"url": "https://ok.example/", "check_interval_minutes": 1}
    )
    allow_private(conn, None)
    with connect(db_url) as off:
        off.execute("SELECT pgpulse.recheck_monitor_urls()")
        bad_id = off.execute(
            "SELECT id FROM public.monitors WHERE url LIKE '%127.0.0.1%'"
        ).fetchone()["id"]
        refused = f"url: host 127.0.0.1 is loopback {PRIVATE_ONLY}"
        assert parked(off, bad_id) == refused
        # whatever would make it due leaves it parked, naming the URL's problem (the
        # product's write succeeds: once it was refused)
        for change in ("next_check_at = now()", "check_interval_minutes = 2"):
            off.execute(f"UPDATE public.monitors SET {change} WHERE id = %s", (bad_id,))
            assert parked(off, bad_id) == refused
        run = tick(off, lookahead_s=120)
        assert (run["monitors_claimed"], run["skipped"], run["stop_reason"]) == (1, 0, "drained")
        assert (
            off.execute(
                "SELECT count(*) AS n FROM pgpulse.outbox WHERE monitor_id = %s", (bad_id,)
            ).fetchone()["n"]
            == 0
        )
        # a job of it put back (a dead letter retried) is dropped, not published
        off.execute(
            """
            INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                        deliver_at, expires_at, payload, last_error)
            VALUES (gen_random_uuid(), %s, 'us-east-1', 'normal', now(), now(),
                    now() + interval '1 minute', '{"url": "http://127.0.0.1:8080/"}', 'x')""",
            (bad_id,),
        )
        assert (
            off.execute(
                "SELECT count(*) AS n FROM pgpulse.outbox WHERE monitor_id = %s", (bad_id,)
            ).fetchone()["n"]
            == 0
        )
        off.execute("UPDATE public.monitors SET is_active = false WHERE id = %s", (bad_id,))
        off.execute("UPDATE public.monitors SET is_active = true WHERE id = %s", (bad_id,))
        assert parked(off, bad_id) == refused
        assert outbox_jobs(off, bad_id) == []
        off.execute(
            "UPDATE public.monitors SET url = 'https://fixed.example/' WHERE id = %s",
            (bad_id,),
        )

        assert parked(off, bad_id) is None
        # fixed: scheduled again (its first slot written at once, as a new monitor's), and
        # the job carries the new URL
        tick(off, lookahead_s=120)
        assert off.execute(
            "SELECT DISTINCT payload ->> 'url' AS u FROM pgpulse.outbox WHERE monitor_id = %s",
            (bad_id,),
        ).fetchall() == [{"u": "https://fixed.example/"}]


BAD_ROWS = {
    "http://169.254.169.254/latest/meta-data/": "host 169.254.169.254 is a cloud metadata endpoint (always refused)",
    "http://localhost:6379/": f"host localhost is loopback {PRIVATE_ONLY}",
    "http://:80/": "no host",
    "http://e.example:99999/": "port 99999 out of range 1-65535",
}


@pytest.fixture
def adopted_db(pg_server) -> Iterator[str]:
    """A product's own monitors table, not yet migrated: good rows and rows whose URL
    pgpulse refuses, all due."""
    name = f"adopt{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    dsn = pg_server.dsn(name)
    with psycopg.connect(dsn) as product:
        product.execute("""
            CREATE TABLE public.monitors (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                url text NOT NULL, check_interval_minutes integer NOT NULL, is_active boolean NOT NULL,
                next_check_at timestamptz, last_scheduled_at timestamptz, preferred_region text)""")
        product.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, is_active, next_check_at) "
            "SELECT 'https://e.example/' || g, 1, true, now() - interval '1 second' "
            "FROM generate_series(1, 5) g"
        )
        for url in BAD_ROWS:
            product.execute(
                "INSERT INTO public.monitors (url, check_interval_minutes, is_active, "
                "next_check_at) VALUES (%s, 1, true, now() - interval '1 second')",
                (url,),
            )
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_adopted_table_with_bad_rows_migrates_and_the_tick_schedules_only_the_good(
    adopted_db, capfd
):
    before = product_rows(adopted_db)
    migrate.upgrade(adopted_db)  # does not fail on the rows already there

    warning = capfd.readouterr().err
    assert "pgpulse: 4 monitor(s) are parked (not checked) until fixed" in warning
    assert "WHERE parked IS NOT NULL" in warning
    with connect(adopted_db) as conn:
        assert product_rows(adopted_db) == before  # nothing lost: every row, url and flag kept
        add_region(conn, "us-east-1", is_default=True)
        run = tick(conn, lookahead_s=0)
        assert (run["monitors_claimed"], run["skipped"], run["stop_reason"]) == (5, 0, "drained")
        assert {
            r["url"]
            for r in conn.execute("SELECT payload ->> 'url' AS url FROM pgpulse.outbox").fetchall()
        } == {f"https://e.example/{g}" for g in range(1, 6)}
        problems = conn.execute(
            "SELECT url, problem, parked FROM pgpulse.monitor_url_problems()"
        ).fetchall()
        # (the problem as the monitor is parked for it: "url: ...")
        assert {r["url"]: r["problem"] for r in problems} == {
            url: f"url: {problem}" for url, problem in BAD_ROWS.items()
        }
        assert all(r["parked"] for r in problems)
        # the product's own writes are checked now: parked, not refused
        monitor_id = conn.execute(
            "INSERT INTO public.monitors (url, check_interval_minutes, is_active) "
            "VALUES ('http://:81/', 1, true) RETURNING id"
        ).fetchone()["id"]
        assert parked(conn, monitor_id) == "url: no host"

    # down: pgpulse goes, the product's table is as it was (its rows never written)
    kept = product_rows(adopted_db)
    migrate.downgrade(adopted_db, "base", force=True)
    assert product_rows(adopted_db) == kept


def product_rows(dsn: str) -> list:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, url, check_interval_minutes, is_active, preferred_region "
            "FROM public.monitors ORDER BY id"
        ).fetchall()
