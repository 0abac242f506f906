"""benchmarks/gpu.sh, the prepared GPU run: it refuses to run without CUDA, and its CPU dry run goes through every
step at the smallest sizes and writes its JSON and markdown (so the first GPU run does not fail on a typo)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu.sh"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(tmp_path), PY=str(REPO / ".venv" / "bin" / "python"))
    return subprocess.run([str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: gpu.sh would run for real")
def test_without_cuda_it_fails_loudly(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr and "--device cpu" in run.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_the_cpu_dry_run_goes_through_every_step(tmp_path):
    run = _run(tmp_path, "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["dry_run"] is True
    steps = report["steps"]
    assert set(steps) == {"smoke", "fidelity", "syncs", "throughput", "precisions", "photo_sizes", "memory",
                          "oom"}
    assert not any("error" in step for step in steps.values())
    assert steps["smoke"]["internal"] == 0
    assert steps["fidelity"]["fp32"]["top5_agree"] == "1/1"  # CPU against CPU: the same engine
    assert {row["counted"] for row in steps["syncs"].values() if isinstance(row, dict)} == {2}
    assert {"efficientnet_lite0 prediction", "efficientnet_lite0 all"} <= set(steps["throughput"])
    assert steps["precisions"]["efficientnet_lite0 fp32 all"]["images_per_s"] > 0
    assert steps["precisions"]["efficientnet_lite0 bf16"] == {"skipped": "dry run: fp32 only"}
    assert steps["photo_sizes"]["efficientnet_lite0 0.15 MP B=1"]["all_over_prediction"] > 0
    assert "DRY RUN" in (tmp_path / "gpu.md").read_text()
