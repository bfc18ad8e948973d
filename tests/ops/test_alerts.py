"""Alerts from a real `pgpulse relay --http` process to a real local webhook receiver:
one alert per incident, and a resolve when it clears."""

import httpx

from tests.waiting import wait_for
from tests.ops.conftest import REGIONS, pgpulse

FAST_ALERTS = {"PGPULSE_ALERT_INTERVAL_S": "0.2", "PGPULSE_ALERT_BREAKER_OPEN_S": "1",
               "PGPULSE_BREAKER_FAILURES": "2", "PGPULSE_BREAKER_COOLDOWN_S": "0.5",
               "PGPULSE_RETRY_WINDOW_S": "0.5", "PGPULSE_ALERT_BACKLOG_AGE_S": "3600"}


def test_deadman_fires_once_and_resolves_after_a_tick(conn, regions, relay_env, start_service, receiver):
    env = relay_env | FAST_ALERTS | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url}
    service = start_service("relay", env=env)
    wait_for(lambda: receiver.of("deadman", "firing"), 20, "the dead-man alert")
    first = receiver.of("deadman", "firing")[0]
    assert first["source"] == "pgpulse" and "no tick has finished" in first["summary"]

    # several more evaluations pass: still one alert for the one incident
    wait_for(lambda: "deadman" in httpx.get(service.url + "/metrics").text or True, 1)
    count_before = len(receiver.received)
    assert pgpulse("tick", env=relay_env).returncode == 0
    wait_for(lambda: receiver.of("deadman", "resolved"), 20, "the dead-man resolve")
    assert len(receiver.of("deadman", "firing")) == 1
    assert len(receiver.of("deadman", "resolved")) == 1
    assert len(receiver.received) >= count_before + 1

    service.stop()
    assert '"event": "alert_firing"' in service.output
    assert '"event": "tick_finished"' in service.output  # ticks from anywhere are logged
    assert '"event": "alert_resolved"' in service.output


def test_breaker_open_alert_while_a_region_is_down(conn, regions, relay_env, devserver, start_service, receiver):
    conn.execute("INSERT INTO public.monitors (url, preferred_region, next_check_at) "
                 "SELECT 'https://eu.example/' || g, 'eu-west-1', now() FROM generate_series(1, 20) g")
    assert pgpulse("tick", env=relay_env).returncode == 0
    devserver.set_faults({"error_rate": 1.0, "error_statuses": [503]}, tokens=[REGIONS["eu-west-1"][0]])
    env = relay_env | FAST_ALERTS | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url}
    start_service("relay", env=env)

    wait_for(lambda: receiver.of("breaker_open", "firing"), 30, "the breaker alert")
    alert = receiver.of("breaker_open", "firing")[0]
    assert alert["details"]["region"] == "eu-west-1"
    assert alert["key"] == "breaker_open:eu-west-1"
    # eu's jobs went to its fallback meanwhile
    wait_for(lambda: conn.execute("SELECT count(*) AS n FROM pgpulse.outbox").fetchone()["n"] == 0,
             30, "rerouted jobs to leave the outbox")

    devserver.clear_faults()
    wait_for(lambda: receiver.of("breaker_open", "resolved"), 30, "the breaker resolve")
    assert len(receiver.of("breaker_open", "firing")) == 1
    healthy = conn.execute("SELECT healthy FROM pgpulse.regions WHERE code = 'eu-west-1'").fetchone()
    assert healthy["healthy"] is True


def test_slow_tick_and_old_backlog_alert(conn, regions, relay_env, start_service, receiver):
    conn.execute("""INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms, lookahead_ms)
                    VALUES ('pg_cron', now() - interval '40 seconds', now(), 45000, 60000)""")
    conn.execute("""INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                                deliver_at, expires_at, allow_fallback, payload)
                    VALUES (gen_random_uuid(), gen_random_uuid(), 'eu-west-1', 'normal',
                            now() - interval '10 minutes', now() - interval '10 minutes',
                            now() + interval '1 hour', false, '{"url": "https://x.example"}')""")
    env = relay_env | FAST_ALERTS | {"PGPULSE_ALERT_WEBHOOK_URL": receiver.url,
                                     "PGPULSE_ALERT_BACKLOG_AGE_S": "60",
                                     # keep the old job where it is: eu is unreachable
                                     "UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": "wrong-token-for-eu"}
    start_service("relay", env=env)
    wait_for(lambda: receiver.of("tick_budget", "firing"), 20, "the tick budget alert")
    assert receiver.of("tick_budget", "firing")[0]["details"]["budget_used"] > 0.8
    wait_for(lambda: receiver.of("backlog_age", "firing"), 20, "the backlog age alert")
    assert receiver.of("backlog_age", "firing")[0]["details"]["region"] == "eu-west-1"

    conn.execute("DELETE FROM pgpulse.outbox")
    wait_for(lambda: receiver.of("backlog_age", "resolved"), 20, "the backlog resolve")
