"""One real deployment for every end-to-end test: TorchServe + gateway, started exactly as `make serve` starts them
(galore_gateway.local.LocalService), on free loopback ports in a temp dir.

Started by the first test that needs it and always stopped at the end of the session, also when tests fail, so
the suite pays one TorchServe start and never runs two side by side.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "efficientnet_lite0"


def newest_source() -> float:
    """mtime of the newest file the default archive is built from."""
    sources = [p for folder in ("handlers", "galore_api", "model_store", "deploy/torchserve")
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


@pytest.fixture(scope="session")
def service(archive_dir, tmp_path_factory):
    """The running deployment; ``service.config.ports`` has its ports."""
    from galore_gateway.local import LocalConfig, LocalService, Ports, free_ports

    if shutil.which("java") is None:
        pytest.fail("TorchServe needs Java 17 on PATH: `make java` installs openjdk-17-jre-headless")
    config = LocalConfig(model_store=archive_dir, run_dir=tmp_path_factory.mktemp("run"), model=MODEL,
                         ports=Ports(*free_ports(7)))
    local = LocalService(config)
    try:
        local.start()
        local.wait_serving(timeout_s=300)
        yield local
    finally:
        local.stop()
