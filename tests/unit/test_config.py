import re
from dataclasses import fields

import pytest

from relay import cli, config
from relay.config import (
    OpsSettings,
    RelaySettings,
    database_url,
    env_suffix,
    redact_url,
    region_endpoint,
)
from relay.errors import ConfigError
from relay.schedule.tick import TickParams
from tests.support.cli import ROOT


def test_region_endpoint_prefers_region_variables_and_falls_back_to_plain_ones():
    env = {
        "UPSTASH_REDIS_REST_URL": "https://global.example/",
        "UPSTASH_REDIS_REST_TOKEN": "g-tok",
        "UPSTASH_REDIS_REST_URL_US_EAST_1": "https://us.example",
        "UPSTASH_REDIS_REST_TOKEN_US_EAST_1": "us-tok",
    }
    us = region_endpoint("us-east-1", env)
    eu = region_endpoint("eu-west-1", env)
    assert (us.url, us.token) == ("https://us.example", "us-tok")
    assert (eu.url, eu.token) == ("https://global.example", "g-tok")
    assert "us-tok" not in repr(us)
    assert env_suffix("ap-south-1") == "AP_SOUTH_1"


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "set UPSTASH_REDIS_REST_URL_EU_WEST_1"),
        ({"UPSTASH_REDIS_REST_URL": "ftp://x"}, "is not an http(s) URL"),
        ({"UPSTASH_REDIS_REST_URL": "https://x"}, "set UPSTASH_REDIS_REST_TOKEN_EU_WEST_1"),
    ],
)
def test_region_endpoint_errors_are_one_line_and_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        region_endpoint("eu-west-1", env)
    assert "\n" not in str(info.value)


def test_database_url_checks_scheme_and_redacts_password():
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        database_url({})
    with pytest.raises(ConfigError, match="must start with postgresql://"):
        database_url({"DATABASE_URL": "mysql://x"})
    assert redact_url("postgresql://u:hunter22@h/db") == "postgresql://u:***@h/db"


def test_relay_settings_reject_out_of_range_and_non_numbers():
    assert RelaySettings.from_env({"PGPULSE_BATCH_SIZE": "250"}).batch_size == 250
    with pytest.raises(ConfigError, match="PGPULSE_BATCH_SIZE must be between 1 and 10000"):
        RelaySettings.from_env({"PGPULSE_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="PGPULSE_CONCURRENCY must be a number"):
        RelaySettings.from_env({"PGPULSE_CONCURRENCY": "many"})


def test_listen_off_polls_often_and_pool_size_is_a_setting():
    default = RelaySettings.from_env({})
    assert (default.listen, default.poll_interval_s, default.pool_size) == (True, 5.0, 36)
    pooled = RelaySettings.from_env({"PGPULSE_LISTEN": "off", "PGPULSE_POOL_SIZE": "5"})
    assert (pooled.listen, pooled.poll_interval_s, pooled.pool_size) == (False, 1.0, 5)
    assert RelaySettings.from_env({"PGPULSE_CONCURRENCY": "1"}).pool_size == 12
    with pytest.raises(ConfigError, match="PGPULSE_LISTEN must be on or off"):
        RelaySettings.from_env({"PGPULSE_LISTEN": "maybe"})


# ------------------------------------------------------------ each setting defined once


def test_docs_settings_is_the_page_config_generates():
    committed = (ROOT / "docs/settings.md").read_text()
    assert committed == config.settings_page(), "run `make docs` (python -m relay.config)"
    # the page has a row for every setting, under its group's heading
    for title, rows in config.setting_groups():
        part = committed[committed.index(f"\n## {title}\n") :].split("\n## ")[1]
        assert [s.env for s in rows] == re.findall(r"^\| `([^`]+)` \|", part, re.M)
    assert len(config.all_settings()) == len({s.env for s in config.all_settings()})


def test_every_variable_the_code_reads_has_a_row():
    rows = {s.env for s in config.all_settings()}
    prefixes = tuple(s.env.split("<")[0] for s in config.all_settings() if "<" in s.env)
    pattern = re.compile(
        r"[\"'](PGPULSE_[A-Z0-9_]+|CRON_SECRET|DATABASE_URL|REDIS_URL|"
        r"DEMO_SECONDS|UPSTASH_[A-Z_]+)[\"']"
    )
    read = {
        name
        for path in (ROOT / "relay").rglob("*.py")
        for name in pattern.findall(path.read_text())
    }
    assert {
        name
        for name in read
        if name not in rows and not name.startswith(prefixes) and name + "_" not in prefixes
    } == set()


def test_settings_objects_follow_their_rows():
    for cls in (RelaySettings, OpsSettings):
        built = cls()
        for f in fields(cls):
            spec = f.metadata["setting"]
            assert getattr(built, f.name) == (spec.derive(built) if spec.derive else spec.default)
            assert getattr(cls.from_env({}), f.name) == getattr(built, f.name)
    assert RelaySettings(concurrency=2, listen=False).pool_size == 20
    with pytest.raises(ConfigError, match="PGPULSE_ALERT_WEBHOOK_URL must be an http"):
        OpsSettings.from_env({"PGPULSE_ALERT_WEBHOOK_URL": "ftp://hooks"})
    assert "hunter2" not in repr(OpsSettings.from_env({"CRON_SECRET": "hunter2"}))


def test_relay_help_lists_every_setting_with_its_default_and_hides_secrets(capsys, monkeypatch):
    monkeypatch.setenv("CRON_SECRET", "hunter2")
    monkeypatch.setenv("PGPULSE_BATCH_SIZE", "250")
    with pytest.raises(SystemExit):
        cli.main(["relay", "--help"])
    shown = capsys.readouterr().out
    for spec in [*RelaySettings.rows(), *OpsSettings.rows()]:
        assert f"  {spec.env} (default {spec.default_text().replace('`', '')}" in shown
    assert "PGPULSE_BATCH_SIZE (default 2000; 1 to 10000)  (now 250)" in shown
    assert "hunter2" not in shown and "CRON_SECRET (default —)  (now set)" in shown


def test_tick_defaults_are_one_object_used_by_the_cli_and_the_docs():
    args = cli.build_parser().parse_args(["tick"])
    assert TickParams.from_options(args) == TickParams()
    page = (ROOT / "docs/settings.md").read_text()
    p = TickParams()
    assert (
        f"| `p_budget` | `--budget SECONDS` | {p.budget_s:g} | time budget in seconds" in page
        and f"| `p_lookahead` | `--lookahead SECONDS` | {p.lookahead_s:g} | emit jobs" in page
        and f"| `p_chunk` | `--chunk MONITORS` | {p.chunk:,} | monitors claimed" in page
    )
