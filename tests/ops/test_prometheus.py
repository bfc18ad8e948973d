"""The shipped Prometheus rules and Grafana dashboard: promtool accepts them, the rules' unit
tests show every alert firing and resolving, and a running relay exports every metric they
name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import ROOT, pgpulse
from tests.support.seeding import add_monitors
from tests.support.waiting import wait_for

RULES = ROOT / "deploy/prometheus/pgpulse-rules.yml"
RULES_TEST = ROOT / "deploy/prometheus/pgpulse-rules_test.yml"
DASHBOARD = ROOT / "deploy/grafana/pgpulse-dashboard.json"
# Grafana's variables, replaced by what they expand to before parsing
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$region": ".*", "$job": "pgpulse"}
METRIC_NAME = re.compile(r"\b((?:pgpulse|process)_[a-z0-9_]+)\b")

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus"
)


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rule_expressions() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(name, value) for e in exprs]
    return exprs


def test_rules_pass_promtool_and_each_alert_fires_and_resolves_in_the_unit_tests():
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in checked.stdout

    tested = promtool("test", "rules", RULES_TEST.name, cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr

    # every alert has a test where it is silent, then fires, then is gone
    groups = yaml.safe_load(RULES_TEST.read_text())["tests"]
    for alert in rule_expressions():
        assert any(_silent_fires_resolves(g["alert_rule_test"], alert) for g in groups), (
            f"{alert}: no unit test shows it silent, firing, then resolved"
        )


def _silent_fires_resolves(cases: list[dict], alert: str) -> bool:
    mine = sorted(
        (c for c in cases if c["alertname"] == alert),
        key=lambda c: int(c["eval_time"].rstrip("m")),
    )
    firing = [i for i, c in enumerate(mine) if c["exp_alerts"]]
    return (
        bool(firing)
        and not mine[0]["exp_alerts"]
        and any(not c["exp_alerts"] for c in mine[firing[0] + 1 :])
    )


# an aggregation operator and its `by (...)`, if any (max_over_time and histogram_quantile
# are functions, not aggregations: the word boundary keeps them out)
AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)"
    r"\s*(?:(by|without)\s*\(([^)]*)\))?\s*\("
)


def test_every_rule_judges_each_deployment_on_its_own():
    """Deployments scraped by one Prometheus are told apart by job: every aggregation keeps
    it, so one deployment's fresh numbers never mask another's alert (the unit test's
    "two deployments, one dies" shows it)."""
    found = 0
    for alert, expr in rule_expressions().items():
        for op, clause, labels in AGGREGATION.findall(expr):
            found += 1
            kept = {label.strip() for label in labels.split(",")}
            assert clause == "by" and "job" in kept, f"{alert}: {op} drops the job label"
    assert found >= 7
    assert "two deployments, one dies" in [
        g["name"] for g in yaml.safe_load(RULES_TEST.read_text())["tests"]
    ]


def test_every_dashboard_expression_parses(tmp_path):
    exprs = dashboard_expressions()
    assert len(exprs) >= 15
    # promtool parses PromQL in rules files: each panel query becomes a recording rule
    wrapper = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(wrapper))
    checked = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # the same check refuses a broken query
    wrapper["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum(rate(x[5m])"})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(wrapper))
    assert promtool("check", "rules", "dashboard.yml", cwd=tmp_path).returncode != 0


def test_a_running_relay_exports_every_metric_the_rules_and_dashboard_name(
    conn, regions, relay_env, start_service
):
    named = {
        name
        for name in METRIC_NAME.findall(
            " ".join([*rule_expressions().values(), *dashboard_expressions()])
        )
        if not name.startswith("pgpulse_worker_")  # a worker's: tests/worker/test_worker_metrics.py
    }
    assert {
        "pgpulse_last_tick_finished_timestamp_seconds",
        "pgpulse_dead_letters",
        "pgpulse_breaker_state",
        "pgpulse_build_info",
    } <= named

    add_monitors(conn, 5)
    assert pgpulse("tick", env=relay_env).returncode == 0
    service = start_service("relay", env=relay_env | {"PGPULSE_DEPTH_INTERVAL_S": "0.2"})

    def exported() -> set[str]:
        text = httpx.get(service.url + "/metrics", timeout=5).text
        return {s.name for f in text_string_to_metric_families(text) for s in f.samples}

    wait_for(
        lambda: named <= exported(),
        30,
        lambda: f"metrics missing from /metrics: {sorted(named - exported())}",
    )

    text = httpx.get(service.url + "/metrics", timeout=5).text
    assert re.search(r'^pgpulse_build_info\{version="[0-9.]+[^"]*"\} 1\.0$', text, re.M)
    # the breaker is a state set: one series per state, exactly one of them 1
    states = {
        s.labels["state"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "pgpulse_breaker_state" and s.labels["region"] == "us-east-1"
    }
    assert states == {"closed": 1.0, "half_open": 0.0, "open": 0.0}
    finished = conn.execute(
        "SELECT extract(epoch FROM max(finished_at))::float8 AS t FROM pgpulse.tick_runs"
    ).fetchone()["t"]
    assert abs(_sample(text, "pgpulse_last_tick_finished_timestamp_seconds") - finished) < 1e-3


def _sample(text: str, name: str) -> float:
    return next(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )
