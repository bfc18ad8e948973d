"""The status page at `/`, loaded by a real headless Chromium against a running relay: what
it shows, and a phone-sized screenshot kept at test-artifacts/status-page.png (or under
$PGPULSE_TEST_ARTIFACTS). Who may see it, and that it is read-only: in-process, in
tests/unit/test_ops_routes.py."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ROOT, pgpulse
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("PGPULSE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
PHONE = (412, 915)


def load_in_chromium(url: str, profile: Path, screenshot: Path) -> str:
    """The page's DOM after load; a screenshot at phone size on the way."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={PHONE[0]},{PHONE[1]}",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing: apt-get install chromium")
def test_the_page_shows_the_system_in_a_real_browser(
    conn, regions, relay_env, start_service, tmp_path
):
    add_monitors(conn, 3, preferred_region="eu-west-1")
    assert pgpulse("tick", env=relay_env).returncode == 0
    # a pg_cron tick that ran out of budget, a dead letter, eu refusing our token
    conn.execute("""INSERT INTO pgpulse.tick_runs (trigger, started_at, finished_at, budget_ms,
                        lookahead_ms, monitors_claimed, jobs_written, chunks, cut_short)
                    VALUES ('pg_cron', now() - interval '50 s', now() - interval '4 s', 45000,
                            60000, 81234, 81234, 17, true)""")
    conn.execute("""INSERT INTO pgpulse.dead_letters (job_id, monitor_id, region, criticality,
                        scheduled_for, deliver_at, expires_at, payload, attempts, last_error)
                    VALUES ('d3adbeef-0000-4000-8000-000000000001', gen_random_uuid(), 'eu-west-1',
                            'normal', now(), now(), now() + interval '1 min', '{}', 5,
                            'ERR max request size exceeded <script>')""")
    service = start_service(
        "relay",
        env=relay_env
        | {
            "UPSTASH_REDIS_REST_TOKEN_EU_WEST_1": "revoked-token",
            "PGPULSE_ALERT_BREAKER_OPEN_S": "0",
            "PGPULSE_FACTS_INTERVAL_S": "0.2",
        },
    )  # the page shows the cached facts: keep them fresh
    wait_for(
        lambda: (
            conn.execute("SELECT healthy FROM pgpulse.regions WHERE code = 'eu-west-1'").fetchone()[
                "healthy"
            ]
            is False
        ),
        30,
        "eu's breaker to open",
    )

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    dom = load_in_chromium(service.url + "/", tmp_path / "chromium-profile", shot)

    assert "<title>pgpulse status</title>" in dom
    assert '<meta http-equiv="refresh" content="10">' in dom
    assert 'name="viewport"' in dom
    assert '<tr data-region="us-east-1">' in dom and '<tr data-region="eu-west-1">' in dom
    eu_row = dom.split('<tr data-region="eu-west-1">')[1].split("</tr>")[0]
    assert "unhealthy" in eu_row and ">1<" in eu_row  # its one dead letter
    assert "open" in eu_row  # this relay's breaker (open, or half-open while it probes)
    us_row = dom.split('<tr data-region="us-east-1">')[1].split("</tr>")[0]
    assert "healthy" in us_row and "closed" in us_row  # this relay's breaker
    ticks = dom.split('id="ticks"')[1].split("</table>")[0]
    assert "pg_cron" in ticks and "CUT SHORT" in ticks and "81234" in ticks
    assert ">cli<" in ticks  # the tick run above
    alerts = dom.split('id="alerts"')[1].split("</ul>")[0]
    assert "breaker_open" in alerts and "eu-west-1" in alerts and "tick_budget" in alerts
    assert "d3adbeef" in dom and "&lt;script&gt;" in dom and "<script>" not in dom
    assert 'class="banner bad" id="verdict"' in dom

    assert shot.exists() and png_size(shot) == PHONE
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
