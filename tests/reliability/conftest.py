"""Small, deterministic versions of the reliability checks (`make reliability` runs them at full size).

Most tests use the shared deployment (tests/conftest.py ``service``) and leave it as they found it: SERVING, same
workers. The supervision test starts its own `make serve` process, since it kills TorchServe and the gateway.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from skimage import data

from tests.conftest import MODEL, deployment

from .gate import Gate, build_gated_archive


@pytest.fixture(scope="session")
def gate(tmp_path_factory) -> Gate:
    """The gate of every gated deployment of the session (tests count arrivals relative to their start)."""
    return Gate(tmp_path_factory.mktemp("gate"))


@pytest.fixture(scope="session")
def gated_store(gate, tmp_path_factory) -> Path:
    """A model store whose efficientnet_lite0.mar is the gated archive (tests/reliability/gate.py)."""
    out = tmp_path_factory.mktemp("gated-store")
    build_gated_archive(out, gate)
    return out


@pytest.fixture(scope="session")
def gated_service(gated_store, tmp_path_factory):
    """A TorchServe deployment of the gated archive, as `make serve` starts it."""
    with deployment("torchserve", gated_store, tmp_path_factory.mktemp("run-gated")) as local:
        yield local


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photo() -> bytes:
    """skimage's cat, 451 x 300, JPEG."""
    return jpeg(data.chelsea())


@pytest.fixture(scope="session")
def big() -> bytes:
    """skimage's cat upscaled to 1600 x 1200 (2 MP), JPEG: about a second of work with every kind."""
    return jpeg(np.asarray(Image.fromarray(data.chelsea()).resize((1600, 1200))))


@pytest.fixture(scope="session")
def tiny() -> bytes:
    """A 32 x 32 noise JPEG: the cheapest image the engine explains."""
    return jpeg(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="package")
def grpc_target(service) -> str:
    return f"127.0.0.1:{service.config.ports.grpc}"


@pytest.fixture(scope="package")
def rest_url(service) -> str:
    return f"http://127.0.0.1:{service.config.ports.rest}/predictions/{MODEL}"


def worker_pids(torchserve_pid: int) -> set[int]:
    """PIDs of TorchServe's Python workers below ``torchserve_pid``."""
    root = psutil.Process(torchserve_pid)
    return {p.pid for p in root.children(recursive=True)
            if any("model_service_worker" in part for part in p.cmdline())}


def metric(port: int, name: str, **labels) -> float:
    """Sum of the samples of ``name`` carrying ``labels`` on 127.0.0.1:port/metrics (0 when absent)."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total
