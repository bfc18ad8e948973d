"""A full scenario with every kind of secret configured: none of them may appear in any
log line, error, HTTP response or metric."""

import httpx

from tests.waiting import wait_for
from tests.ops.conftest import pgpulse

CRON_SECRET = "cron-3f9a1c7e5b2d8046"
DB_PASSWORD = "pw-6e2b9d4f1a7c3085"


def with_password(dsn: str) -> str:
    # the throwaway cluster trusts local connections, so the password is carried, not checked
    return dsn.replace("postgres@", f"postgres:{DB_PASSWORD}@")


def test_no_secret_in_logs_errors_responses_or_metrics(conn, regions, relay_env, devserver, start_service):
    wrong_eu_token = "tok-eu-WRONG-91c2d7e4"
    env = relay_env | {"CRON_SECRET": CRON_SECRET, "DATABASE_URL": with_password(relay_env["DATABASE_URL"]),
                       "UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": wrong_eu_token,
                       "PGPULSE_BREAKER_FAILURES": "1", "PGPULSE_RETRY_WINDOW_S": "0.5",
                       "PGPULSE_LOG_LEVEL": "DEBUG"}
    secrets = [CRON_SECRET, DB_PASSWORD, wrong_eu_token, env["UPSTASH_REDIS_REST_TOKEN_US_EAST_1"],
               devserver.admin_token]
    conn.execute("INSERT INTO public.monitors (url, preferred_region, allow_fallback, next_check_at) "
                 "SELECT 'https://example.com/' || g, CASE WHEN g % 2 = 0 THEN 'eu-west-1' END, "
                 "g % 4 <> 0, now() FROM generate_series(1, 40) g")
    seen: list[str] = []

    service = start_service("relay", env=env)
    for auth in (None, "Bearer nope", f"Bearer {CRON_SECRET}"):
        response = httpx.post(service.url + "/api/cron/scheduler",
                              headers={"Authorization": auth} if auth else {})
        seen.append(response.text + str(response.headers))
    assert response.status_code == 200
    # everything leaves the outbox but eu-west-1's jobs that may not fall back
    waiting = "SELECT count(*) AS n FROM pgpulse.outbox WHERE region <> 'eu-west-1' OR allow_fallback"
    wait_for(lambda: conn.execute(waiting).fetchone()["n"] == 0, 30, "jobs to be published")
    seen.append(httpx.get(service.url + "/metrics").text)
    seen.append(httpx.get(service.url + "/readyz").text)
    assert service.stop() == 0
    seen.append(service.output)
    assert '"region": "eu-west-1", "old": "closed", "new": "open"' in service.output

    for args in (["status"], ["status", "--json"], ["tick", "--json"], ["relay", "--once"],
                 ["dlq", "list"], ["region", "list"]):
        result = pgpulse(*args, env=env)
        seen.append(result.stdout + result.stderr)
    unreachable = env | {"DATABASE_URL": f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:1/nowhere"}
    for args in (["status"], ["tick"], ["migrate"], ["relay", "--once"]):
        result = pgpulse(*args, env=unreachable)
        assert result.returncode != 0
        seen.append(result.stdout + result.stderr)

    everything = "\n".join(seen)
    assert "***" in everything  # redacted where a URL had to be shown
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."
