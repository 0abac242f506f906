"""One real deployment for the serving tests: TorchServe + gateway on free loopback ports in a temp dir.

Started once for this package (by the first test that needs it) and always stopped when the package's tests are
done, also when they fail, so other test packages never run beside a second TorchServe.
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from galore_client.client import GrpcClient, RestClient
from galore_gateway.local import LocalConfig, LocalService, Ports, free_ports

REPO = Path(__file__).resolve().parents[2]
MODEL = "efficientnet_lite0"
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


def _newest_source() -> float:
    sources = [p for folder in ("handlers", "galore_api", "model_store", "deploy/torchserve")
               for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix != ".mar" and "__pycache__" not in p.parts]
    return max(p.stat().st_mtime for p in sources)


@pytest.fixture(scope="package")
def archive_dir(tmp_path_factory) -> Path:
    """model_store/ when `make archive` built it from the current sources, else a fresh build in a temp dir."""
    built = REPO / "model_store" / f"{MODEL}.mar"
    if built.is_file() and built.stat().st_mtime >= _newest_source():
        return built.parent
    from model_store.build import build_default

    out = tmp_path_factory.mktemp("model_store")
    build_default(out)
    return out


@pytest.fixture(scope="package")
def service(archive_dir, tmp_path_factory):
    if shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 on PATH: `make java` installs openjdk-17-jre-headless")
    ports = Ports(*free_ports(7))
    config = LocalConfig(model_store=archive_dir, run_dir=tmp_path_factory.mktemp("run"), model=MODEL, ports=ports)
    local = LocalService(config)
    try:
        local.start()
        local.wait_serving(timeout_s=300)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="package")
def grpc_client(service):
    with GrpcClient(f"127.0.0.1:{service.config.ports.grpc}", timeout_s=120) as client:
        yield client


@pytest.fixture(scope="package")
def rest_client(service):
    with RestClient(f"http://127.0.0.1:{service.config.ports.rest}", MODEL, timeout_s=120) as client:
        yield client


@pytest.fixture(scope="package")
def rest_url(service) -> str:
    return f"http://127.0.0.1:{service.config.ports.rest}/predictions/{MODEL}"
