"""Prometheus rules, scrape config and Grafana dashboard: checked by the real promtool and against the metric
contract."""
from __future__ import annotations

import json
import re
import subprocess

import yaml

from .promql import (CONTRACT_METRICS, DASHBOARD, PROMETHEUS_CONFIG, PROMETHEUS_DIR, RULES, RULES_TEST, alert_rules,
                     base_metric, dashboard_exprs, expand_variables, metric_names, recording_rules, tool)


def promtool(*args: str, cwd=PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_every_rule():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(recording_rules()) + len(alert_rules())
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_rules_compute_the_expected_values_in_promtool_unit_tests():
    # rules_test.yml feeds known series (6 images/s, 20 % errors, batches of 2, ...) and asserts the recorded
    # values and when each alert fires.
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_scrape_config_is_valid_and_scrapes_gateway_and_torchserve():
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"galore-gateway": ["127.0.0.1:9091"], "galore-torchserve": ["127.0.0.1:8082"]}


def test_rules_read_only_contract_metrics():
    for name, expr in {**recording_rules(), **alert_rules()}.items():
        read = {base_metric(m) for m in metric_names(expr)} - {"up"} - set(recording_rules())
        assert read <= CONTRACT_METRICS, f"{name} reads undeclared metrics {read - CONTRACT_METRICS}"


def test_recording_rule_names_follow_level_metric_operations():
    for name, expr in recording_rules().items():
        level, metric, operation = name.split(":")
        assert metric.startswith("galore_") and operation, name
        grouped_by = {label for clause in re.findall(r"by \(([^)]*)\)", expr)
                      for label in clause.replace(" ", "").split(",")} - {"le"}
        assert set(level.split("_")) <= grouped_by, f"{name}: level {level} but grouped by {grouped_by}"


def test_dashboard_is_valid_grafana_json_with_the_required_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for needed in ("Images per second", "p50 / p95 / p99", "Batch size", "Error ratio"):
        assert needed in titles
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_dashboard_expressions_parse_in_promtool(tmp_path):
    # promtool parses every expression of a rules file, so the dashboard's queries go in as recording rules.
    exprs = [expand_variables(e) for e in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr:{i}", "expr": e}
                                                       for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_reads_only_contract_metrics_and_recording_rules():
    known = CONTRACT_METRICS | set(recording_rules())
    read = {base_metric(m) for e in dashboard_exprs() for m in metric_names(e)}
    assert read <= known, f"dashboard reads metrics that nothing declares: {sorted(read - known)}"
    # the four things the issue asks a dashboard to show are really queried
    assert {"model_kind:galore_images:rate1m", "model:galore_batch_size:mean5m",
            "model_transport:galore_requests_errors:ratio_rate5m"} <= read
    assert {f"model_transport:galore_request_duration_seconds:p{q}" for q in (50, 95, 99)} <= read


def test_metric_name_extraction():
    expr = ('sum by (model, le) (rate(galore_batch_size_bucket{model=~"$model",kind="a b"}[5m])) '
            '/ on (model) group_left galore_inflight_requests offset 5m and up == 0')
    assert metric_names(expr) == {"galore_batch_size_bucket", "galore_inflight_requests", "up"}
    assert base_metric("galore_batch_size_bucket") == "galore_batch_size"
    assert base_metric("galore_images_total") == "galore_images_total"
