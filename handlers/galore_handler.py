"""TorchServe entry point (the archive's ``--handler``): the one place that maps TorchServe's rows and context to
the service core's typed calls (galore_service), and its answers back. No service logic lives here.

TorchServe calls ``handle(data, context)`` with one dict per request of the dynamic batch; we return exactly one
bytes item per request and set each request's HTTP status and content type. A row holds:
  * from the gateway: ``{"galore-rpc": b"Explain" | b"GetModelInfo", "body": serialized protobuf,
    "galore-deadline": b"<Unix seconds>"}``;
  * REST: ``body`` (or ``data``) with the request's headers (Content-Type, Accept, an optional ``galore-deadline``)
    in the context; a multipart form's part headers sit under the ``body`` key of the headers.
"""
from __future__ import annotations

import logging
import os
import sys

from PIL import Image

from galore_service.calls import Request
from galore_service.config import HandlerConfig
from galore_service.metrics import MetricKind, WorkerMetrics
from galore_service.model import build_engine
from galore_service.service import ExplainService
from galore_wire.contract import DEADLINE_KEY, RPC_KEY, parse_deadline

logger = logging.getLogger(__name__)


class TorchServeMetrics(WorkerMetrics):
    """Emits through TorchServe's ``context.metrics``."""

    def __init__(self, context, model: str):
        super().__init__(model)
        self._store = getattr(context, "metrics", None)

    def _record(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        if self._store is None:
            return
        from ts.metrics.metric_type_enum import MetricTypes

        metric_type = MetricTypes.COUNTER if kind is MetricKind.COUNTER else MetricTypes.HISTOGRAM
        self._store.get_metric(name, metric_type).add_or_update(value, [self._model, *labels])


def headers(context, idx: int) -> dict[str, object]:
    """Request ``idx``'s headers, names in lower case ({} when the context has none)."""
    try:
        return {str(k).lower(): v for k, v in (context.get_all_request_header(idx) or {}).items()}
    except (AttributeError, IndexError, TypeError):
        return {}


def to_request(row: dict, context, idx: int) -> Request:
    """One row of TorchServe's batch (and its headers and id in ``context``) -> the service's typed call."""
    sent = headers(context, idx)
    part = sent.get("body") if isinstance(sent.get("body"), dict) else {}
    body = next((row[key] for key in ("body", "data") if key in row), None)
    rpc = bytes(row[RPC_KEY]).decode("utf-8", "replace") if RPC_KEY in row else None
    due = row.get(DEADLINE_KEY)
    return Request(rpc=rpc, body=body, content_type=str(sent.get("content-type") or part.get("content-type") or ""),
                   accept=str(sent.get("accept") or ""),
                   deadline=parse_deadline(due if due is not None else sent.get(DEADLINE_KEY)),
                   request_id=_request_id(context, idx))


def _request_id(context, idx: int) -> str:
    """TorchServe's id of request ``idx`` of the batch (in its access log too), or ""."""
    try:
        return str((getattr(context, "request_ids", None) or {}).get(idx, ""))
    except AttributeError:
        return ""


class GaloreHandler:
    """TorchServe custom handler: ``initialize`` once per worker, ``handle`` once per batch."""

    def __init__(self):
        self.service: ExplainService | None = None
        self.initialized = False

    def initialize(self, context) -> None:
        _problems_to_stderr()
        properties = context.system_properties
        model_dir = properties.get("model_dir")
        config = HandlerConfig.from_model_yaml(getattr(context, "model_yaml_config", None), model_dir)
        Image.MAX_IMAGE_PIXELS = config.limits.max_pixels  # Pillow's decompression-bomb guard
        gpu = properties.get("gpu_id")  # TorchServe gives each worker its own GPU (round robin over number_of_gpu)
        device = f"cuda:{gpu}" if gpu is not None and _cuda_available() else "cpu"
        if device != "cpu":
            _set_cuda_device(device)  # the worker's current device: CUDA context, streams and handles on its GPU
        engine = build_engine(config, device)
        self.service = ExplainService(engine, config, context.model_name)
        self.initialized = True
        logger.info("galore handler ready: model=%s device=%s pid=%d", context.model_name, device, os.getpid())

    def handle(self, data: list[dict], context) -> list[bytes]:
        requests = [to_request(row, context, idx) for idx, row in enumerate(data)]
        answers = self.service.answer(requests, TorchServeMetrics(context, context.model_name))
        for idx, answer in enumerate(answers):
            context.set_response_status(answer.http_status, answer.phrase, idx)
            context.set_response_content_type(idx, answer.media_type)
        return [answer.body for answer in answers]


def _problems_to_stderr() -> None:
    """TorchServe logs a worker's stdout at INFO and its stderr at WARN (MODEL_LOG): send our warnings, errors and
    tracebacks to stderr, so a console that shows warnings (``make serve``) shows them; the rest stays on stdout.
    Idempotent: a second call replaces the handlers the first one installed."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    chatter = logging.StreamHandler(sys.stdout)
    chatter.addFilter(lambda record: record.levelno < logging.WARNING)
    for handler in (problems, chatter):
        handler.setFormatter(formatter)
        handler.set_name("galore-console")
    for name in ("galore", "galore_service", "handlers"):
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if h.get_name() == "galore-console"]:
            log.removeHandler(old)
        log.addHandler(problems)
        log.addHandler(chatter)
        log.setLevel(logging.INFO)
        log.propagate = False


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _set_cuda_device(device: str) -> None:
    import torch

    torch.cuda.set_device(device)


def entry_point(service: GaloreHandler):
    """The module-level ``handle(data, context)`` TorchServe calls, over ``service``: initializes it on first use
    (data is None on the load ping)."""

    def handle(data, context):
        if not service.initialized:
            service.initialize(context)
        if data is None:
            return None
        return service.handle(data, context)

    return handle


handle = entry_point(GaloreHandler())
