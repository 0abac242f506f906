"""The Prometheus Adapter rule behind the HPA: a per-pod rate() of galore_images_total, evaluated by the real
promtool on synthetic scrapes (the adapter expands its Go template the same way before querying Prometheus)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.tools import require_tool

from .manifests import K8S, REPO

VALUES = REPO / "deploy" / "prometheus-adapter" / "values.yaml"
HPA_METRIC = "galore_images_processed_per_second"


def adapter_rule() -> dict:
    (rule,) = yaml.safe_load(VALUES.read_text())["rules"]["custom"]
    return rule


def expand(template: str, series: str, matchers: str, group_by: str) -> str:
    """The adapter's metricsQuery template with the values it substitutes for a pods query."""
    query = (template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
             .replace("<<.GroupBy>>", group_by))
    assert "<<" not in query, f"unexpanded template field in {query}"
    return query


def test_rule_exposes_the_hpa_metric_per_pod_from_the_images_counter():
    rule = adapter_rule()
    assert rule["name"]["matches"] == "^galore_images_total$"
    assert rule["name"]["as"] == HPA_METRIC
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert rule["seriesQuery"].startswith("galore_images_total{")
    assert "rate(<<.Series>>" in rule["metricsQuery"]
    hpa = yaml.safe_load((K8S / "base" / "horizontalpodautoscaler.yaml").read_text())
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]


def test_rule_yields_images_per_second_of_each_pod(tmp_path: Path):
    promtool = require_tool("promtool", purpose="evaluate the adapter rule")
    query = expand(adapter_rule()["metricsQuery"], "galore_images_total",
                   'namespace="galore",pod=~"galore-serve-a|galore-serve-b"', "pod")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": HPA_METRIC, "expr": query}]}]}))
    a = 'namespace="galore",pod="galore-serve-a",model="efficientnet_lite0"'
    b = 'namespace="galore",pod="galore-serve-b",model="efficientnet_lite0"'
    other = 'namespace="elsewhere",pod="galore-serve-a",model="efficientnet_lite0"'
    series = [
        # 15 s scrapes for 10 min, then 10 min without traffic. Pod a answers 30 images per scrape (2/s) and
        # explains each of them twice over (kinds other than prediction must not count);
        {"series": f'galore_images_total{{{a},kind="prediction"}}', "values": "0+30x40 1200+0x40"},
        {"series": f'galore_images_total{{{a},kind="deliberative"}}', "values": "0+60x40 2400+0x40"},
        {"series": f'galore_images_total{{{a},kind="counterfactual"}}', "values": "0+60x40 2400+0x40"},
        # pod b 7.5 per scrape (0.5/s); a pod of the same name in another namespace must not leak in.
        {"series": f'galore_images_total{{{b},kind="prediction"}}', "values": "0+7.5x40 300+0x40"},
        {"series": f'galore_images_total{{{other},kind="prediction"}}', "values": "0+600x40 24000+0x40"},
    ]
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": [
            {"expr": HPA_METRIC, "eval_time": "8m", "exp_samples": [
                {"labels": f'{HPA_METRIC}{{pod="galore-serve-a"}}', "value": 2},
                {"labels": f'{HPA_METRIC}{{pod="galore-serve-b"}}', "value": 0.5}]},
            # after traffic stops the rate falls back to 0 (a raw counter would stay at its total)
            {"expr": HPA_METRIC, "eval_time": "15m", "exp_samples": [
                {"labels": f'{HPA_METRIC}{{pod="galore-serve-a"}}', "value": 0},
                {"labels": f'{HPA_METRIC}{{pod="galore-serve-b"}}', "value": 0}]},
        ]}],
    }))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
