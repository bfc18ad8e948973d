"""Bad monitor and region rows are refused by the database, with an error that names the
problem (the constraint's name says what is wrong)."""

from __future__ import annotations

import psycopg
import pytest

GOOD = {"url": "https://example.com/health", "check_interval_minutes": 5}


def insert(conn, table: str, row: dict) -> None:
    conn.execute(
        f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
        list(row.values()))


@pytest.fixture(autouse=True)
def region(conn) -> None:
    insert(conn, "pgpulse.regions", {"code": "us-east-1", "is_default": True})


@pytest.mark.parametrize(("change", "constraint"), [
    ({"check_interval_minutes": 0}, "monitor_interval_1_to_1440_minutes"),
    ({"check_interval_minutes": 1441}, "monitor_interval_1_to_1440_minutes"),
    ({"check_interval_minutes": -5}, "monitor_interval_1_to_1440_minutes"),
    ({"url": ""}, "monitor_url_http"),
    ({"url": "ftp://example.com/file"}, "monitor_url_http"),
    ({"url": "example.com"}, "monitor_url_http"),
    ({"url": "javascript:alert(1)"}, "monitor_url_http"),
    ({"url": "https://"}, "monitor_url_http"),
    ({"url": "https://exa mple.com/"}, "monitor_url_http"),
    ({"url": "https://example.com/" + "a" * 2100}, "monitor_url_http"),
    ({"criticality": "urgent"}, "monitor_criticality_known"),
    ({"criticality": "CRITICAL"}, "monitor_criticality_known"),
    ({"method": "FETCH"}, "monitor_method_known"),
    ({"timeout_ms": 50}, "monitor_timeout_100ms_to_120s"),
    ({"expected_status": [200, 700]}, "monitor_expected_status_http"),
    ({"expected_status": []}, "monitor_expected_status_http"),
    ({"check_retries": 9}, "monitor_check_retries_0_to_5"),
])
def test_bad_monitor_is_refused_naming_the_problem(conn, change, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        insert(conn, "public.monitors", GOOD | change)
    assert info.value.diag.constraint_name == constraint
    assert constraint in str(info.value)
    assert conn.execute("SELECT count(*) AS n FROM public.monitors").fetchone()["n"] == 0


def test_unknown_preferred_region_is_refused_naming_the_region(conn):
    with pytest.raises(psycopg.errors.ForeignKeyViolation) as info:
        insert(conn, "public.monitors", GOOD | {"preferred_region": "mars-1"})
    assert "preferred_region" in info.value.diag.constraint_name
    assert info.value.diag.message_detail == (
        'Key (preferred_region)=(mars-1) is not present in table "regions".')


@pytest.mark.parametrize(("column", "value", "error"), [
    ("url", None, psycopg.errors.NotNullViolation),
    ("check_interval_minutes", None, psycopg.errors.NotNullViolation),
    ("criticality", None, psycopg.errors.NotNullViolation),
])
def test_missing_required_values_are_refused(conn, column, value, error):
    with pytest.raises(error) as info:
        insert(conn, "public.monitors", GOOD | {column: value})
    assert info.value.diag.column_name == column


def test_bad_interval_with_an_explicit_next_check_at_is_refused(conn):
    with pytest.raises(psycopg.errors.CheckViolation, match="monitor_interval_1_to_1440_minutes"):
        conn.execute("INSERT INTO public.monitors (url, check_interval_minutes, next_check_at) "
                     "VALUES ('https://example.com/', 0, now())")


def test_bad_update_is_refused_too(conn):
    insert(conn, "public.monitors", GOOD)
    with pytest.raises(psycopg.errors.CheckViolation, match="monitor_interval_1_to_1440_minutes"):
        conn.execute("UPDATE public.monitors SET check_interval_minutes = 0")


@pytest.mark.parametrize("change", [
    {"check_interval_minutes": 1},
    {"check_interval_minutes": 1440},
    {"url": "http://10.0.0.7:8080/health?deep=1#x"},
    {"url": "https://example.com"},
    {"criticality": "critical", "preferred_region": "us-east-1", "method": "HEAD",
     "timeout_ms": 120000, "expected_status": [200, 301, 599], "check_retries": 0},
])
def test_good_monitor_is_accepted_with_defaults(conn, change):
    insert(conn, "public.monitors", GOOD | change)
    row = conn.execute("SELECT * FROM public.monitors").fetchone()
    for column, value in change.items():
        assert row[column] == value
    defaults = {"method": "GET", "timeout_ms": 10000, "expected_status": [200],
                "criticality": "normal", "is_active": True, "allow_fallback": True}
    for column, value in defaults.items():
        if column not in change:
            assert row[column] == value
    assert row["next_check_at"] is not None


@pytest.mark.parametrize(("row", "constraint"), [
    ({"code": "US East"}, "region_code_format"),
    ({"code": "-east"}, "region_code_format"),
    ({"code": "eu-west-1", "weight": 101}, "region_weight_0_to_100"),
    ({"code": "eu-west-1", "fallback_region": "eu-west-1"}, "region_fallback_not_self"),
])
def test_bad_region_is_refused_naming_the_problem(conn, row, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        insert(conn, "pgpulse.regions", row)
    assert info.value.diag.constraint_name == constraint


def test_only_one_default_region(conn):
    with pytest.raises(psycopg.errors.UniqueViolation) as info:
        insert(conn, "pgpulse.regions", {"code": "eu-west-1", "is_default": True})
    assert info.value.diag.constraint_name == "regions_single_default"
