"""A worker whose GPU context is broken exits (status EXIT_DEVICE_UNUSABLE), so that TorchServe or the KServe pod
restarts it, instead of answering INTERNAL forever. Run in a child process: the exit is real."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from galore_service.service import EXIT_DEVICE_UNUSABLE

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import dataclasses, torch
    from galore import Engine, ImageRequest, ExplainOptions
    from galore_service.config import HandlerConfig
    from galore_service.metrics import WorkerMetrics
    from galore_service.service import ExplainService
    from tests.engine.conftest import IDENTITY_PREP, gray_pool_model, quadrant_image

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    engine = Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                device="cpu")
    engine.split = dataclasses.replace(engine.split, backbone=Broken())
    service = ExplainService(engine, HandlerConfig(), "tiny")
    service._run_engine([ImageRequest(quadrant_image(), ExplainOptions(top_e=3))], WorkerMetrics("tiny"), 0.0)
    print("still running")
""")


def test_a_broken_device_makes_the_worker_exit_to_be_restarted():
    child = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == EXIT_DEVICE_UNUSABLE, child.stderr[-2000:]
    assert "still running" not in child.stdout
    assert "the device is unusable" in child.stderr and "illegal memory access" in child.stderr
