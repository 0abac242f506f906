"""TorchServe entry point (the archive's ``--handler``): builds the engine once, answers each batch.

TorchServe calls ``handle(data, context)`` with one dict per request of the dynamic batch; we return exactly one
bytes item per request and set each request's HTTP status and content type.
"""
from __future__ import annotations

import logging
import os
import sys

from PIL import Image

from handlers.config import HandlerConfig
from handlers.metrics import TorchServeMetrics
from handlers.model import build_engine
from handlers.service import ExplainService

logger = logging.getLogger(__name__)


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
        metrics = TorchServeMetrics(context, context.model_name)
        answers = self.service.answer_batch(data, context, metrics)
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
    for name in ("galore", "handlers"):
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
