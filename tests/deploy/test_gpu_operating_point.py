"""The GPU operating point (issue 20): the CUDA image's archive runs one TorchServe worker per GPU with larger
batches. TorchServe takes batchSize and workers from the archive's model config before config.properties, so the
operating point lives in the archive the Dockerfile builds for TORCH_VARIANT=cuda."""
from __future__ import annotations

import re
import shlex
import zipfile
from pathlib import Path

import yaml

from model_store.build import main as build_main

REPO = Path(__file__).resolve().parents[2]


def _gpu_flags() -> list[str]:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    (flags,) = re.findall(r'^ARG GPU_ARCHIVE_FLAGS="([^"]*)"$', dockerfile, flags=re.M)
    assert 'if [ "${TORCH_VARIANT}" = cuda ]; then flags="${GPU_ARCHIVE_FLAGS}"; fi' in dockerfile
    assert 'ARCHIVE_FLAGS="${flags}"' in dockerfile
    return shlex.split(flags)


def test_the_cuda_image_archive_has_one_worker_per_gpu_and_larger_batches(tmp_path, capsys):
    build_main(["default", "--out", str(tmp_path), *_gpu_flags()])  # the Dockerfile's flags, as make passes them
    with zipfile.ZipFile(tmp_path / "efficientnet_lite0.mar") as mar:
        config = yaml.safe_load(mar.read("model-config.yaml"))
    cpu = yaml.safe_load((REPO / "deploy" / "torchserve" / "model-config.yaml").read_text(encoding="utf-8"))
    assert config["minWorkers"] == config["maxWorkers"] == 1
    assert config["batchSize"] > cpu["batchSize"]
    assert config["handler"] == cpu["handler"]  # the same model, limits and precision as the CPU archive
