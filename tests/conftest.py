"""One real deployment per backend for every end-to-end test: TorchServe (or the KServe host) + gateway, started
exactly as `make serve [BACKEND=kserve]` starts them (galore_supervisor.deployment.LocalService), on free loopback ports in
a temp dir.

The ``service`` fixture is parametrised by backend. The e2e tests under tests/serving, tests/client and
tests/kserve run against both (per-image errors and field names included); the others (observability,
reliability: TorchServe's metrics port, worker processes and fault injection) against TorchServe only, to keep the
suite's time. A test or module narrows its backends with ``@pytest.mark.backends("torchserve")``. pytest groups the
tests by backend, so each deployment starts once and two never run side by side; each is always stopped, also
when tests fail.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "efficientnet_lite0"
BACKENDS = ("torchserve", "kserve")
BOTH_BACKENDS_UNDER = ("serving", "client", "kserve")  # tests/<dir> whose e2e tests run on every backend


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): the backends a service test runs against")


def pytest_generate_tests(metafunc):
    """Every test that uses the deployment gets a ``backend`` parameter (session scope: one deployment each)."""
    if "service" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None:
        backends = marker.args
    else:
        parts = Path(str(metafunc.definition.fspath)).relative_to(REPO).parts
        backends = BACKENDS if len(parts) > 1 and parts[1] in BOTH_BACKENDS_UNDER else BACKENDS[:1]
    metafunc.parametrize("backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request) -> str:
    return request.param


def newest_source() -> float:
    """mtime of the newest file the default archive is built from."""
    folders = ("handlers", "galore_service", "galore_wire", "galore_api", "model_store", "deploy/torchserve")
    sources = [p for folder in folders
               for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix != ".mar" and "__pycache__" not in p.parts]
    return max(p.stat().st_mtime for p in sources)


@pytest.fixture(scope="session")
def archive_dir(tmp_path_factory) -> Path:
    """model_store/ when `make archive` built it from the current sources, else a fresh build in a temp dir."""
    built = REPO / "model_store" / f"{MODEL}.mar"
    if built.is_file() and built.stat().st_mtime >= newest_source():
        return built.parent
    from model_store.build import build_default

    out = tmp_path_factory.mktemp("model_store")
    build_default(out)
    return out


@contextlib.contextmanager
def deployment(backend: str, model_store: Path, run_dir: Path):
    """A deployment as `make serve` starts it, serving ``model_store``'s archive on free ports; always stopped."""
    from galore_gateway.config import Backend
    from galore_supervisor.deployment import LocalConfig, LocalService, Ports, free_ports

    if backend == "torchserve" and shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 on PATH: `make java` installs openjdk-17-jre-headless")
    config = LocalConfig(model_store=model_store, run_dir=run_dir, model=MODEL, ports=Ports(*free_ports(7)),
                         backend=Backend(backend))
    local = LocalService(config)
    try:
        local.start()
        local.wait_serving(timeout_s=300)
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def service(backend, archive_dir, tmp_path_factory):
    """The running deployment; ``service.config.ports`` has its ports, ``service.config.backend`` its backend."""
    with deployment(backend, archive_dir, tmp_path_factory.mktemp(f"run-{backend}")) as local:
        yield local
