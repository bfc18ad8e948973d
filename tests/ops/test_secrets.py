"""A full scenario with every kind of secret configured: none of them may appear in any
log line, error, HTTP response or metric."""

import io
import json
import logging
import subprocess
from urllib.parse import quote

import httpx

from relay import logs
from relay.devserver import DevServer
from relay.local.embedded import free_port
from tests.support.cli import pgpulse
from tests.support.dsn import with_password
from tests.support.waiting import wait_for

CRON_SECRET = "cron-3f9a1c7e5b2d8046"
DB_PASSWORD = "pw-6e2b9d4f1a7c3085"  # carried, not checked: the cluster trusts local connections


def test_no_secret_in_logs_errors_responses_or_metrics(
    conn, regions, relay_env, devserver, start_service
):
    wrong_eu_token = "tok-eu-WRONG-91c2d7e4"
    env = relay_env | {
        "CRON_SECRET": CRON_SECRET,
        "DATABASE_URL": with_password(relay_env["DATABASE_URL"], DB_PASSWORD),
        "UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": wrong_eu_token,
        "PGPULSE_BREAKER_FAILURES": "1",
        "PGPULSE_RETRY_WINDOW_S": "0.5",
        "PGPULSE_LOG_LEVEL": "DEBUG",
    }
    secrets = [
        CRON_SECRET,
        DB_PASSWORD,
        wrong_eu_token,
        env["UPSTASH_REDIS_REST_TOKEN_US_EAST_1"],
        devserver.admin_token,
    ]
    conn.execute(
        "INSERT INTO public.monitors (url, preferred_region, allow_fallback, next_check_at) "
        "SELECT 'https://example.com/' || g, CASE WHEN g % 2 = 0 THEN 'eu-west-1' END, "
        "g % 4 <> 0, now() FROM generate_series(1, 40) g"
    )
    seen: list[str] = []

    service = start_service("relay", env=env)
    for auth in (None, "Bearer nope", f"Bearer {CRON_SECRET}"):
        response = httpx.post(
            service.url + "/api/cron/scheduler", headers={"Authorization": auth} if auth else {}
        )
        seen.append(response.text + str(response.headers))
    assert response.status_code == 200
    # everything leaves the outbox but eu-west-1's jobs that may not fall back
    waiting = (
        "SELECT count(*) AS n FROM pgpulse.outbox WHERE region <> 'eu-west-1' OR allow_fallback"
    )
    wait_for(lambda: conn.execute(waiting).fetchone()["n"] == 0, 30, "jobs to be published")
    seen.append(httpx.get(service.url + "/metrics").text)
    seen.append(httpx.get(service.url + "/readyz").text)
    assert service.stop() == 0
    seen.append(service.output)
    assert '"region": "eu-west-1", "old": "closed", "new": "open"' in service.output

    for args in (
        ["status"],
        ["status", "--json"],
        ["tick", "--json"],
        ["relay", "--once"],
        ["dlq", "list"],
        ["region", "list"],
    ):
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


# ------------------------------------------------------------------ every other form

# a password given as a URL parameter, with the characters JSON escapes and non-ASCII
QUERY_PASSWORD = 'qp"\\é-5c1e8a0f'
QUERY_PASSWORD_IN_URL = quote(QUERY_PASSWORD, safe="")


def test_password_as_url_parameter_stays_out_of_errors_bodies_and_logs(relay_env, start_service):
    unreachable = (
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        f"?password={QUERY_PASSWORD_IN_URL}&connect_timeout=2"
    )
    env = relay_env | {"DATABASE_URL": unreachable, "CRON_SECRET": CRON_SECRET}
    seen = []
    for args in (["status"], ["tick"], ["migrate"], ["dlq", "list"]):
        result = pgpulse(*args, env=env)
        assert result.returncode == 1 and "error:" in result.stderr
        seen.append(result.stdout + result.stderr)

    service = start_service("http", env=env)
    failed = httpx.post(
        service.url + "/api/cron/scheduler",
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
        timeout=30,
    )
    assert failed.status_code == 500
    seen.append(failed.text)
    service.stop()
    assert '"tick_failed"' in service.output
    seen.append(service.output)

    everything = "\n".join(seen)
    assert "password=***" in everything  # the URL is still shown, its password is not
    for form in (QUERY_PASSWORD, QUERY_PASSWORD_IN_URL, json.dumps(QUERY_PASSWORD)[1:-1]):
        assert form not in everything, f"the password leaked as {form!r}"


def test_redaction_runs_before_json_encoding():
    secret = 'tok"\\ü€-8d2b61f7'
    logs.register_secret(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("pgpulse.test_secrets")
    logger.addHandler(handler)
    try:
        logger.warning(
            f"failed with {secret}",
            extra={"fields": {"error": f"auth {secret} refused", "nested": {"why": [secret, 1]}}},
        )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    entry = json.loads(line)
    assert entry["event"] == "failed with ***"
    assert entry["error"] == "auth *** refused" and entry["nested"] == {"why": ["***", 1]}
    for form in (secret, json.dumps(secret), json.dumps(secret, ensure_ascii=False)):
        assert form[1:-1] not in line


def test_relay_help_does_not_print_the_webhook_url(relay_env):
    hook = "https://hooks.example.com/services/T01/B02/hook-9a8b7c6d5e"
    result = pgpulse(
        "relay",
        "--help",
        env=relay_env | {"PGPULSE_ALERT_WEBHOOK_URL": hook, "CRON_SECRET": CRON_SECRET},
    )
    assert result.returncode == 0
    assert "PGPULSE_ALERT_WEBHOOK_URL" in result.stdout and "(now set)" in result.stdout
    assert hook not in result.stdout and "hook-9a8b7c6d5e" not in result.stdout
    assert CRON_SECRET not in result.stdout
    assert "(now 0.5)" in result.stdout  # ordinary settings still show their value


def command_line(pid: int) -> str:
    return subprocess.run(
        ["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout


def test_started_processes_get_no_secret_on_their_command_line(redis_server):
    tokens = {"argv-token-a-3e7f1c": 1, "argv-token-b-9d4a2b=": 2}
    with DevServer(redis_server.url, tokens) as server:
        argv = command_line(server.proc.pid) + command_line(redis_server.proc.pid)
        assert "relay.devserver" in argv and "redis-server" in argv
        for secret in [*tokens, server.admin_token]:
            assert secret not in argv, f"a secret is on a command line: {secret[:6]}..."
        # the tokens still reached the server, through its environment
        for token, db in tokens.items():
            reply = httpx.post(
                server.url, json=["PING"], headers={"Authorization": f"Bearer {token}"}
            )
            assert reply.json() == {"result": "PONG"}, (db, reply.text)
        assert server.stats()["requests"] >= 2


def test_no_fixed_default_admin_token(redis_server):
    with (
        DevServer(redis_server.url, {"t-5a1b": 1}) as first,
        DevServer(redis_server.url, {"t-5a1b": 1}) as second,
    ):
        assert first.admin_token and second.admin_token
        assert first.admin_token != second.admin_token and len(first.admin_token) >= 24
        for guess in ("admin-secret", "admin"):
            refused = httpx.get(
                first.url + "/_admin/stats", headers={"Authorization": f"Bearer {guess}"}
            )
            assert refused.status_code == 401
