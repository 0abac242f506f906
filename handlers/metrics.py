"""Worker-side metrics, emitted through TorchServe's metrics API.

Every name here must be declared in deploy/torchserve/metrics.yaml (TorchServe silently drops undeclared
custom metrics); they appear on TorchServe's metrics endpoint (metrics_mode=prometheus) with an extra
``Hostname`` label. Gateway-side metrics live in galore_gateway/metrics.py.
"""
from __future__ import annotations

import logging

from ts.metrics.metric_type_enum import MetricTypes

IMAGES_TOTAL = "galore_images_total"  # counter {model, kind}; kind = explanation kind or "prediction"
STAGE_SECONDS = "galore_stage_duration_seconds"  # histogram {model, stage}; seconds per batch and stage
BATCH_SIZE = "galore_batch_size"  # histogram {model}; images per engine call
EXEMPLAR_CACHE_TOTAL = "galore_exemplar_cache_total"  # counter {model, result}; result = hit | miss
DROPPED_TOTAL = "galore_dropped_requests_total"  # counter {model, reason}; requests dropped before the engine
STAGES = ("decode", "forward", "attribution", "regions", "encode")

logger = logging.getLogger(__name__)


class WorkerMetrics:
    """Thin wrapper over ``context.metrics``; a metrics failure is logged, never fails a request."""

    def __init__(self, context, model: str):
        self._store = getattr(context, "metrics", None)
        self._model = model

    def _emit(self, name: str, metric_type: MetricTypes, value: float, labels: list[str]) -> None:
        if self._store is None:
            return
        try:
            self._store.get_metric(name, metric_type).add_or_update(value, [self._model, *labels])
        except Exception:  # a metric must never take a batch down
            logger.exception("cannot emit metric %s", name)

    def images(self, kind: str, count: int) -> None:
        if count:
            self._emit(IMAGES_TOTAL, MetricTypes.COUNTER, count, [kind])

    def stage(self, stage: str, seconds: float) -> None:
        self._emit(STAGE_SECONDS, MetricTypes.HISTOGRAM, seconds, [stage])

    def batch_size(self, images: int) -> None:
        self._emit(BATCH_SIZE, MetricTypes.HISTOGRAM, images, [])

    def dropped(self, reason: str, count: int = 1) -> None:
        if count:
            self._emit(DROPPED_TOTAL, MetricTypes.COUNTER, count, [reason])

    def exemplar_cache(self, result: str, count: int) -> None:
        if count:
            self._emit(EXEMPLAR_CACHE_TOTAL, MetricTypes.COUNTER, count, [result])
