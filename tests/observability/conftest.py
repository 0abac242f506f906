"""A real TorchServe + gateway for the observability tests, started exactly as `make serve` does
(galore_gateway.local.LocalService, like tests/serving), on free loopback ports, torn down when this test
package is done (package scope, so it is gone before other packages start their own)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .promql import ROOT

ARCHIVE = ROOT / "model_store" / "efficientnet_lite0.mar"


@pytest.fixture(scope="package")
def service(tmp_path_factory):
    """The running service; ``service.config.ports`` has its ports."""
    from galore_gateway.local import LocalConfig, LocalService, Ports, free_ports

    model_store = ARCHIVE.parent
    if not ARCHIVE.is_file():  # `make test` builds it; a bare pytest run builds a private one
        from model_store.build import build_default

        model_store = tmp_path_factory.mktemp("model_store")
        build_default(model_store)
    ports = Ports(*free_ports(7))
    run_dir: Path = tmp_path_factory.mktemp("observability-run")
    local = LocalService(LocalConfig(model_store=model_store, run_dir=run_dir, ports=ports))
    local.start()
    try:
        local.wait_serving(timeout_s=300)
        yield local
    finally:
        local.stop()
