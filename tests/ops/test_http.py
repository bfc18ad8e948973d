"""The operations endpoints, served by the real `pgpulse http` process."""

import httpx

from tests.ops.conftest import pgpulse

SECRET = "cron-secret-7d1e4f0a9b"


def seed_due(conn, n=50):
    conn.execute("INSERT INTO public.monitors (url, next_check_at) "
                 "SELECT 'https://example.com/' || g, now() - interval '5 seconds' "
                 "FROM generate_series(1, %s) g", (n,))


def test_healthz_readyz_and_metrics(conn, regions, relay_env, start_service):
    service = start_service("http", env=relay_env | {"CRON_SECRET": SECRET})
    health = httpx.get(service.url + "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    not_ready = httpx.get(service.url + "/readyz")
    assert not_ready.status_code == 503
    assert any("no tick finished" in reason for reason in not_ready.json()["reasons"])

    seed_due(conn)
    assert pgpulse("tick", env=relay_env).returncode == 0
    ready = httpx.get(service.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True

    # a due job waiting far too long makes the process not ready, with the region named
    conn.execute("UPDATE pgpulse.outbox SET deliver_at = now() - interval '10 minutes' "
                 "WHERE job_id = (SELECT job_id FROM pgpulse.outbox LIMIT 1)")
    stale = httpx.get(service.url + "/readyz")
    assert stale.status_code == 503
    assert any("oldest due job waits" in reason for reason in stale.json()["reasons"])

    text = httpx.get(service.url + "/metrics")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    body = text.text
    assert "pgpulse_tick_monitors 50.0" in body
    assert 'pgpulse_outbox_backlog{region="' in body
    assert "pgpulse_outbox_oldest_due_age_seconds" in body


def test_cron_trigger_runs_one_tick_with_the_secret_only(conn, regions, relay_env, start_service):
    seed_due(conn, 20)
    service = start_service("http", env=relay_env | {"CRON_SECRET": SECRET})
    url = service.url + "/api/cron/scheduler"

    missing = httpx.post(url)
    wrong = httpx.post(url, headers={"Authorization": "Bearer " + SECRET[:-1] + "x"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.tick_runs").fetchone()["n"] == 0

    assert httpx.get(url).status_code == 405
    assert httpx.get(url).headers["allow"] == "POST"

    ok = httpx.post(url, headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200, ok.text
    record = ok.json()
    assert record["trigger"] == "http"
    assert record["monitors_claimed"] == 20 and record["jobs_written"] == 20
    for header in ("x-content-type-options", "x-frame-options", "content-security-policy",
                   "cache-control", "referrer-policy"):
        assert header in ok.headers
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 20


def test_cron_trigger_without_a_configured_secret_is_refused(conn, regions, relay_env, start_service):
    service = start_service("http", env=relay_env)
    response = httpx.post(service.url + "/api/cron/scheduler",
                          headers={"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert response.json() == {"error": "CRON_SECRET is not configured"}
    assert conn.execute("SELECT count(*) AS n FROM pgpulse.tick_runs").fetchone()["n"] == 0
