"""The worker metrics of galore_service/metrics.py (same names and labels), kept by prometheus_client in its default
registry, which KServe's ModelServer serves on ``/metrics`` of its HTTP port."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from galore_service.metrics import BATCH_SIZE, LABELS, STAGE_SECONDS, MetricKind, WorkerMetrics

# TorchServe's default histogram buckets are Prometheus' defaults; batch sizes get integer buckets here.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_metrics: dict[str, object] = {}


def _metric(name: str, kind: MetricKind):
    if name not in _metrics:
        labels = ("model", *LABELS[name])
        if kind is MetricKind.COUNTER:
            _metrics[name] = Counter(name.removesuffix("_total"), name, labels)
        else:
            buckets = BATCH_BUCKETS if name == BATCH_SIZE else Histogram.DEFAULT_BUCKETS
            _metrics[name] = Histogram(name, "seconds" if name == STAGE_SECONDS else name, labels, buckets=buckets)
    return _metrics[name]


class PrometheusMetrics(WorkerMetrics):
    def _record(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        metric = _metric(name, kind).labels(self._model, *labels)
        if kind is MetricKind.COUNTER:
            metric.inc(value)
        else:
            metric.observe(value)
