"""The regions the relay suites publish to: each a Redis database of the dev server behind
its own tokens, and the environment a relay reads them from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.config import env_suffix
from tests.support.cli import clean_env


@dataclass(frozen=True)
class RegionSpec:
    code: str
    db: int
    token: str
    alt_token: str  # a second token of the same database: two relays can see it differently


# Distinctive token values, so a test can prove none of them shows in any output.
REGIONS = (
    RegionSpec("us-east-1", 1, "tok-us-east-1-5b2f9c0d7e", "tok-us-east-1-alt-61f0c2"),
    RegionSpec("eu-west-1", 2, "tok-eu-west-1-a81c4e6f30", "tok-eu-west-1-alt-9d3a47"),
    RegionSpec("ap-south-1", 3, "tok-ap-south-1-3d9e7b1a54", "tok-ap-south-1-alt-0b8e15"),
)
BY_CODE = {r.code: r for r in REGIONS}
ADMIN_TOKEN = "admin-7c1e0f9a2b"


def make_relay_env(
    db_url: str,
    upstash_url: str,
    tokens: dict[str, str],
    *,
    shared_url: bool = False,
    **settings: Any,
) -> dict[str, str]:
    """A clean environment for `pgpulse`: the database, an Upstash token per region (tokens:
    code -> token) and its URL (shared_url: one UPSTASH_REDIS_REST_URL for every region,
    also those added later), and PGPULSE_<NAME> for each setting name=value."""
    env = clean_env(DATABASE_URL=db_url)
    if shared_url:
        env["UPSTASH_REDIS_REST_URL"] = upstash_url
    for code, token in tokens.items():
        if not shared_url:
            env[f"UPSTASH_REDIS_REST_URL_{env_suffix(code)}"] = upstash_url
        env[f"UPSTASH_REDIS_REST_TOKEN_{env_suffix(code)}"] = token
    env |= {f"PGPULSE_{name.upper()}": str(value) for name, value in settings.items()}
    return env


def take_down(devserver, *tokens: str) -> None:
    """The regions behind these tokens answer 503 to everything until the faults are cleared."""
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [503]}, tokens=list(tokens))
