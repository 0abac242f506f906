"""The real Prometheus server for the scrape test: deploy/prometheus/prometheus.yml pointed at one deployment,
run as a child process on a free loopback port, queried through its HTTP API."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests
import yaml

from .promql import PROMETHEUS_CONFIG, RULES

SCRAPE_INTERVAL_S = 1


def write_config(path: Path, gateway_metrics: str, torchserve_metrics: str, worker_path: str = "/metrics") -> Path:
    """The deploy config with these two targets (the worker job scraping ``worker_path``: TorchServe's metrics port
    or the KServe host's /metrics), the rules by absolute path, and 1 s scrape/evaluation."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"}
    config["rule_files"] = [str(RULES)]
    targets = {"galore-gateway": gateway_metrics, "galore-torchserve": torchserve_metrics}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if job["job_name"] == "galore-torchserve":
            job["metrics_path"] = worker_path
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    """A running prometheus binary; ``query`` evaluates PromQL through /api/v1/query."""

    def __init__(self, binary: str, config: Path, data_dir: Path, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(data_dir.parent / "prometheus.log", "wb")
        self._proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {self._proc.returncode}; see {self._log.name}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout_s} s")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant vector ``expr`` (at unix time ``at``, default now) as [{"metric": {...}, "value": float}]."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        reply = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body}")
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in body["data"]["result"]]

    def scalar(self, expr: str, at: float | None = None) -> float:
        """Sum of the instant vector ``expr``; 0 when it is empty (a counter that never moved)."""
        return sum(r["value"] for r in self.query(expr, at))

    def metric_names(self) -> set[str]:
        reply = requests.get(f"{self.url}/api/v1/label/__name__/values", timeout=10)
        return set(reply.json()["data"])

    def wait_for(self, expr: str, predicate, timeout_s: float = 60.0) -> float:
        """Polls ``scalar(expr)`` until ``predicate(value)``; returns the value or raises with the last one."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(expr)
            if predicate(value):
                return value
            time.sleep(SCRAPE_INTERVAL_S / 2)
        raise AssertionError(f"{expr} never satisfied the condition within {timeout_s} s; last value {value}")

    def stop(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            pass
        finally:
            self._log.close()
