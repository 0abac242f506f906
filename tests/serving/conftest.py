"""Clients and photos for the serving tests; the deployment itself is tests/conftest.py's ``service``."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from galore_client.client import GrpcClient, RestClient
from galore_supervisor.deployment import free_ports  # noqa: F401 - re-exported for the serving tests
from tests.conftest import MODEL, REPO
# ImageNet cat classes (ids 281-285) and the big cats a cat photo is most often confused with.
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lynx"}


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def chelsea() -> bytes:
    """skimage's cat photo, 451 x 300 pixels, as JPEG bytes."""
    return encode(data.chelsea())


@pytest.fixture(scope="session")
def coffee() -> bytes:
    return encode(data.coffee())


@pytest.fixture(scope="package")
def grpc_client(service):
    with GrpcClient(f"127.0.0.1:{service.config.ports.grpc}", timeout_s=120) as client:
        yield client


@pytest.fixture(scope="package")
def rest_client(service):
    with RestClient(service.config.rest_base, MODEL, timeout_s=120) as client:
        yield client


@pytest.fixture(scope="package")
def rest_url(service) -> str:
    return service.config.rest_url
