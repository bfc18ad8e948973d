import pytest

from relay.config import RelaySettings, database_url, env_suffix, redact_url, region_endpoint
from relay.errors import ConfigError


def test_region_endpoint_prefers_region_variables_and_falls_back_to_plain_ones():
    env = {"UPSTASH_REDIS_REST_URL": "https://global.example/", "UPSTASH_REDIS_REST_TOKEN": "g-tok",
           "UPSTASH_REDIS_REST_URL_US_EAST_1": "https://us.example", "UPSTASH_REDIS_REST_TOKEN_US_EAST_1": "us-tok"}
    us = region_endpoint("us-east-1", env)
    eu = region_endpoint("eu-west-1", env)
    assert (us.url, us.token) == ("https://us.example", "us-tok")
    assert (eu.url, eu.token) == ("https://global.example", "g-tok")
    assert "us-tok" not in repr(us)
    assert env_suffix("ap-south-1") == "AP_SOUTH_1"


@pytest.mark.parametrize("env, message", [
    ({}, "set UPSTASH_REDIS_REST_URL_EU_WEST_1"),
    ({"UPSTASH_REDIS_REST_URL": "ftp://x"}, "is not an http(s) URL"),
    ({"UPSTASH_REDIS_REST_URL": "https://x"}, "set UPSTASH_REDIS_REST_TOKEN_EU_WEST_1"),
])
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
