"""Small helpers shared by the observability tests: where the deploy files are, which metric names a PromQL
expression reads, and which metric names the service declares."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "galore-serve.json"
TORCHSERVE_METRICS = ROOT / "deploy" / "torchserve" / "metrics.yaml"

# The metric contract every component shares (README "Metrics").
CONTRACT_METRICS = frozenset({
    "galore_images_total", "galore_images_per_second", "galore_request_duration_seconds",
    "galore_stage_duration_seconds", "galore_batch_size", "galore_requests_total", "galore_inflight_requests",
    "galore_exemplar_cache_total",
})
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def tool(name: str) -> str:
    """Path of a Prometheus binary; skips (fails under CI) when missing."""
    return require_tool(name, purpose="run the real Prometheus checks")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects, e.g. ``sum by (le) (rate(a_bucket{x="y"}[5m])) / b`` -> {a_bucket, b}."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\boffset\s+\S+", "", text)  # offset modifiers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(0), text[match.end():].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function call or keyword
        names.add(name)
    return names


def base_metric(name: str) -> str:
    """Histogram series name -> the histogram's name (``x_bucket`` -> ``x``); other names unchanged."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and not name.endswith("_total"):
            stem = name[: -len(suffix)]
            if stem in CONTRACT_METRICS:
                return stem
    return name


def recording_rules() -> dict[str, str]:
    """Recording rule name -> expression, from rules.yml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"] if "record" in rule}


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard (panel targets and template queries), variables as-is."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("definition", "")
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
        if match:
            exprs.append(match.group(1))
    return exprs


def expand_variables(expr: str) -> str:
    """Dashboard expression with its template variables replaced so Prometheus can parse it."""
    return expr.replace("$model", ".*")


def torchserve_declared_metrics() -> set[str]:
    """Names declared under model_metrics in deploy/torchserve/metrics.yaml (handler metrics)."""
    config = yaml.safe_load(TORCHSERVE_METRICS.read_text())
    return {entry["name"] for entries in (config.get("model_metrics") or {}).values() for entry in entries or []}
