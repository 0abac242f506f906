"""Worker-side metrics: their names, and the emitter interface each host implements.

The names are the one home for both hosts. TorchServe (its emitter: ``TorchServeMetrics`` in
handlers/galore_handler.py): every name must be declared in deploy/torchserve/metrics.yaml (TorchServe silently
drops undeclared custom metrics); they appear on TorchServe's metrics endpoint (metrics_mode=prometheus) with an
extra ``Hostname`` label. KServe: galore_kserve/metrics.py registers them with prometheus_client, served on the KServe host's ``/metrics``. Gateway-side metrics live in
galore_gateway/metrics.py.
"""
from __future__ import annotations

import enum
import logging

IMAGES_TOTAL = "galore_images_total"  # counter {model, kind}; kind = explanation kind or "prediction"
STAGE_SECONDS = "galore_stage_duration_seconds"  # histogram {model, stage}; seconds per batch and stage
BATCH_SIZE = "galore_batch_size"  # histogram {model}; images per engine call
EXEMPLAR_CACHE_TOTAL = "galore_exemplar_cache_total"  # counter {model, result}; result = hit | miss
DROPPED_TOTAL = "galore_dropped_requests_total"  # counter {model, reason}; requests dropped before the engine
LATE_TOTAL = "galore_late_requests_total"  # counter {model}; requests computed but answered after their deadline
STAGES = ("decode", "forward", "attribution", "regions", "encode")
# name -> its label names after "model"
LABELS = {IMAGES_TOTAL: ("kind",), STAGE_SECONDS: ("stage",), BATCH_SIZE: (), EXEMPLAR_CACHE_TOTAL: ("result",),
          DROPPED_TOTAL: ("reason",), LATE_TOTAL: ()}

logger = logging.getLogger(__name__)


class MetricKind(enum.Enum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class WorkerMetrics:
    """What the service records per batch. This base records nothing (``--local``, tests); a host subclasses
    ``_record``. A metrics failure is logged, never fails a request."""

    def __init__(self, model: str):
        self._model = model

    def _record(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        """Adds ``value`` to metric ``name`` with labels [model, *labels]."""

    def _emit(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        try:
            self._record(name, kind, value, labels)
        except Exception:  # a metric must never take a batch down
            logger.exception("cannot emit metric %s", name)

    def images(self, kind: str, count: int) -> None:
        if count:
            self._emit(IMAGES_TOTAL, MetricKind.COUNTER, count, [kind])

    def stage(self, stage: str, seconds: float) -> None:
        self._emit(STAGE_SECONDS, MetricKind.HISTOGRAM, seconds, [stage])

    def batch_size(self, images: int) -> None:
        self._emit(BATCH_SIZE, MetricKind.HISTOGRAM, images, [])

    def dropped(self, reason: str, count: int = 1) -> None:
        if count:
            self._emit(DROPPED_TOTAL, MetricKind.COUNTER, count, [reason])

    def late(self, count: int) -> None:
        """Requests whose engine work finished after the caller's deadline: computed for nobody."""
        if count:
            self._emit(LATE_TOTAL, MetricKind.COUNTER, count, [])

    def exemplar_cache(self, result: str, count: int) -> None:
        if count:
            self._emit(EXEMPLAR_CACHE_TOTAL, MetricKind.COUNTER, count, [result])

