"""pgpulse.url_problem against the shared URL vectors (tests/support/url_vectors.json, which
a worker's own check runs too), every character IDNA maps or drops, and the upgrade that
parks monitors whose URL the rules refuse from 0.2.0."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from relay import migrate
from tests.support.legacy import load_legacy
from tests.support.seeding import connect, schedule_of
from tests.support.url_vectors import file_vectors, reasons, unicode_vectors

PRIVATE_ONLY = "(allowed only with pgpulse.allow_private_targets = on)"
PARK = "9999-12-31 23:59:59+00"

# what url_problem's line says for each reason of the vectors file
PHRASES = {
    "not-ascii": ("is not ASCII (",),
    "not-a-label": ("has an xn-- label that encodes no Unicode (not an A-label)",),
    "metadata": ("a cloud metadata endpoint (always refused)",),
    "loopback": (f"loopback {PRIVATE_ONLY}",),
    "link-local": (f"link-local {PRIVATE_ONLY}",),
    "unspecified": (f"the unspecified address {PRIVATE_ONLY}",),
    "private": (f"private {PRIVATE_ONLY}",),
    "multicast": (f"multicast {PRIVATE_ONLY}",),
    "reserved": (f"reserved {PRIVATE_ONLY}",),
    "private-name": (f"is a private network name {PRIVATE_ONLY}",),
    "single-label": (f"is a single-label name, resolved inside the local network {PRIVATE_ONLY}",),
}
# a character outside ASCII may be refused by the earlier whitespace check instead
ANY_CHARACTER = PHRASES["not-ascii"] + ("has whitespace or control characters",)


def verdicts(conn, urls: list[str], private: bool) -> dict[str, str | None]:
    """url_problem of each URL, in one statement, with private targets on or off."""
    conn.execute("SELECT set_config('pgpulse.allow_private_targets', %s, false)", (str(private),))
    rows = conn.execute(
        "SELECT u, pgpulse.url_problem(u) AS p FROM unnest(%s::text[]) u", (urls,)
    ).fetchall()
    return {r["u"]: r["p"] for r in rows}


def test_the_vectors_file_is_one_rule_with_known_reasons():
    vectors = file_vectors()
    assert set(reasons()) == set(PHRASES) | {"public"}
    assert {v.reason for v in vectors} == set(reasons())
    assert len({v.url for v in vectors}) == len(vectors)
    for v in vectors:
        # allowed with private targets off implies allowed with them on; public is both
        assert (v.reason == "public") == v.allowed_off, v
        assert v.allowed_on or not v.allowed_off, v


@pytest.mark.parametrize("private", [False, True], ids=["private-off", "private-on"])
def test_url_problem_follows_the_vectors_file(conn, private):
    vectors = file_vectors()
    problems = verdicts(conn, [v.url for v in vectors], private)
    wrong = []
    for v in vectors:
        allowed = v.allowed_on if private else v.allowed_off
        problem = problems[v.url]
        if allowed != (problem is None) or (
            problem is not None and not any(p in problem for p in PHRASES[v.reason])
        ):
            wrong.append((v.url, v.reason, problem))
        elif problem is not None:
            assert "\n" not in problem
    assert wrong == []


@pytest.mark.slow  # seconds of real time: outside make check's lane
def test_every_character_idna_maps_or_drops_is_refused_in_a_host(conn):
    """Each code point UTS #46 maps, ignores or deviates on, and each default-ignorable one,
    at four places of a refused host: refused, naming the character. With private targets
    on (no host refused for being private) once per code point, each place in turn."""
    vectors = unicode_vectors()
    assert len(vectors) > 4 * 6000  # the idna table or unicodedata, not a handful
    for private, urls in ((False, [v.url for v in vectors]), (True, [v.url for v in vectors[::5]])):
        problems = verdicts(conn, urls, private)
        wrong = [
            (url, problem)
            for url, problem in problems.items()
            if problem is None or not any(p in problem for p in ANY_CHARACTER)
        ]
        assert wrong == [], (
            f"{len(wrong)} accepted or refused for another reason (private {private})"
        )
    assert verdicts(conn, ["http://loc\u00adalhost:6379/"], False) == {
        "http://loc\u00adalhost:6379/": "host loc<U+00AD>alhost is not ASCII (store an "
        "internationalised name in its A-label form, xn--...)"
    }


def test_a_single_label_or_cluster_name_is_accepted_with_private_targets_on(conn):
    conn.execute("SELECT set_config('pgpulse.allow_private_targets', 'on', false)")
    conn.execute("INSERT INTO pgpulse.regions (code, is_default) VALUES ('us-east-1', true)")
    for url in ("http://redis:6379/", "http://kubernetes.default.svc/", "http://[2002:7f00:1::]/"):
        conn.execute("INSERT INTO public.monitors (url) VALUES (%s)", (url,))
    assert {r["parked"] for r in schedule_of(conn).values()} == {None}
    conn.execute("SELECT set_config('pgpulse.allow_private_targets', 'off', false)")
    # off: the product's write succeeds (once it was refused), the monitor is parked
    monitor_id = conn.execute(
        "INSERT INTO public.monitors (url) VALUES ('http://redis:6379/') RETURNING id"
    ).fetchone()["id"]
    assert schedule_of(conn, [monitor_id])[monitor_id]["parked"] == (
        f"url: host redis is a single-label name, resolved inside the local network {PRIVATE_ONLY}"
    )


# ------------------------------------------------------------------ upgrade from 0016

# accepted by 0016's rules, refused by 0.2.0's
REFUSED_FROM_0_2_0 = {
    "http://loc\u00adalhost:6379/": "host loc<U+00AD>alhost is not ASCII (store an "
    "internationalised name in its A-label form, xn--...)",
    "http://[2002:7f00:1::]/": f"host [2002:7f00:1::] is 127.0.0.1, loopback {PRIVATE_ONLY}",
    "http://redis:6379/": "host redis is a single-label name, resolved inside the local "
    f"network {PRIVATE_ONLY}",
}
TESTED = ["https://e.example/1", "https://e.example/2", *REFUSED_FROM_0_2_0]


@pytest.fixture
def db_0016(pg_server) -> Iterator[str]:
    """A populated install of revision 0016 (before 0.2.0) with good monitors and monitors
    whose URL 0016 accepts and 0.2.0 refuses, each with its jobs written."""
    name = f"url0016_{os.getpid()}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    dsn = pg_server.dsn(name)
    load_legacy(pg_server, dsn, "created_0016")
    with connect(dsn) as conn:
        for url in TESTED:
            conn.execute(
                "INSERT INTO public.monitors (url, check_interval_minutes) VALUES (%s, 1)", (url,)
            )
        conn.execute("CALL pgpulse.tick(p_trigger => 'test', p_lookahead => interval '2 minutes')")
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_upgrade_from_0016_parks_monitors_the_new_rules_refuse(db_0016, capsys):
    def state(conn) -> dict[str, tuple[bool, int]]:
        """Per tested URL: parked, and its waiting jobs. Parked: pgpulse.schedule says why
        (0.2.0), or 0016's mark, next_check_at = PARK in the product's row (before)."""
        held = conn.execute("SELECT to_regclass('pgpulse.schedule') IS NOT NULL AS h").fetchone()
        parked = (
            "EXISTS (SELECT 1 FROM pgpulse.schedule s"
            "         WHERE s.monitor_id = m.id AND s.parked IS NOT NULL)"
            if held["h"]
            else "m.next_check_at = %(park)s"
        )
        return {
            r["url"]: (r["parked"], r["jobs"])
            for r in conn.execute(
                f"SELECT m.url, {parked} AS parked,"
                "       (SELECT count(*) FROM pgpulse.outbox o WHERE o.monitor_id = m.id) AS jobs"
                "  FROM public.monitors m WHERE m.url = ANY (%(tested)s)",
                {"park": PARK, "tested": TESTED},
            )
        }

    with connect(db_0016) as conn:
        before = state(conn)
    assert len(before) == len(TESTED)
    assert all(not parked and jobs > 0 for parked, jobs in before.values()), before

    migrate.upgrade(db_0016)
    warning = capsys.readouterr().err
    assert "monitor(s) are parked (not checked) until fixed" in warning
    with connect(db_0016) as conn:
        after = state(conn)
        assert after == {
            url: (url in REFUSED_FROM_0_2_0, 0 if url in REFUSED_FROM_0_2_0 else jobs)
            for url, (_, jobs) in before.items()
        }
        problems = conn.execute(
            "SELECT url, problem FROM pgpulse.monitor_url_problems() WHERE url = ANY (%s)",
            (TESTED,),
        )
        # (the problem as the monitor is parked for it: "url: ...")
        assert {r["url"]: r["problem"] for r in problems} == {
            url: f"url: {problem}" for url, problem in REFUSED_FROM_0_2_0.items()
        }
