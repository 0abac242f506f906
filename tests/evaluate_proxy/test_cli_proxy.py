"""`galore evaluate proxy` and `galore train-hardness` through the real CLI on the CUB-format fixture."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from galore_cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def keep_threads():
    """--threads sets torch's thread count for the process: give the rest of the session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A resnet18 with 3 outputs (random weights, seeded): a stand-in for a CUB-trained classifier."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18_3.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    return path


def test_evaluate_proxy_writes_json_table_and_plot(cub_root, resnet_weights, tmp_path, capsys):
    out = tmp_path / "report"
    status = main(["evaluate", "proxy", str(cub_root), "--arch", "resnet18", "--state-dict", str(resnet_weights),
                   "--device", "cpu", "--top-e", "3", "--out", str(out), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((out / "proxy.json").read_text())
    assert summary["images"] == 3 and summary["settings"]["split"] == "test"
    assert set(summary["curves"]) == {"attributive/1", "self_aware/1", "deliberative/2", "deliberative/3",
                                      "counterfactual/1", "counterfactual/2", "counterfactual/1/exemplar",
                                      "counterfactual/2/exemplar"}
    assert len(summary["curves"]["deliberative/2"]["precision"]) == 91  # 0.5 %, then 1 %..90 %
    assert summary["settings"]["part_mapping"] == "authors" and summary["settings"]["estimator"] == "reference"
    assert summary["settings"]["geometry"] == "resize" and "geometry resize" in (out / "proxy.md").read_text()
    assert "PIoU" in summary["settings"]["rules"]
    assert set(summary["piou"]) == {"counterfactual/1", "counterfactual/2"}
    assert "Table II" in (out / "proxy.md").read_text()
    assert (out / "proxy_pr.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_proxy_bad_input_exits_2(cub_root, resnet_weights, tmp_path, capsys):
    for flags, named in ((["--coverages", "0.1,abc"], "--coverages"), (["--coverages", "table3-vgg16"], "--coverage"),
                         (["--student-arch", "resnet18"], "--student-arch and --student-state-dict go together")):
        assert main(["evaluate", "proxy", str(cub_root), "--arch", "resnet18", "--state-dict", str(resnet_weights),
                     "--out", str(tmp_path)] + flags) == 2
        assert named in capsys.readouterr().err  # table3-vgg16 (0.5 % only) does not hold the reference 10 %
    assert main(["evaluate", "proxy", str(cub_root), "--arch", "resnet18", "--state-dict",
                 str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "--state-dict" in capsys.readouterr().err
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "five.pt")
    assert main(["evaluate", "proxy", str(cub_root), "--arch", "resnet18", "--state-dict",
                 str(tmp_path / "five.pt"), "--out", str(tmp_path)]) == 2
    assert "does not fit resnet18 with 3 classes" in capsys.readouterr().err
    assert main(["evaluate", "proxy", str(tmp_path / "nowhere"), "--arch", "resnet18", "--state-dict",
                 str(resnet_weights), "--out", str(tmp_path)]) == 2
    assert "CUB_ROOT: " in capsys.readouterr().err
    assert main(["evaluate", "proxy", str(cub_root), "--arch", "resnet18", "--state-dict", str(resnet_weights),
                 "--coverage", "0.105", "--out", str(tmp_path)]) == 2
    assert "--coverage: the reference coverage 0.105" in capsys.readouterr().err


def test_train_hardness_cli_on_the_cub_layout(cub_root, resnet_weights, tmp_path, capsys):
    out = tmp_path / "hp"
    args = ["train-hardness", str(cub_root), "--layout", "cub", "--arch", "resnet18", "--state-dict",
            str(resnet_weights), "--hardness-arch", "resnet18", "--epochs", "1", "--batch-size", "3",
            "--threads", "1", "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["train_images"] == 3 and report["held_out"]["images"] == 3
    assert "--hardness-state-dict" in capsys.readouterr().out
    state = torch.load(out / "hardness.pt", weights_only=True)
    assert state["fc.weight"].shape == (1, 512)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    # the output goes into a model archive the way the brief's users will build one
    labels = tmp_path / "labels.txt"
    labels.write_text("A\nB\nC\n")
    subprocess.run([sys.executable, "-m", "model_store.build", "torchvision", "--arch", "resnet18", "--state-dict",
                    str(resnet_weights), "--labels", str(labels), "--hardness-arch", "resnet18",
                    "--hardness-state-dict", str(out / "hardness.pt"), "--name", "cub_tiny", "--out",
                    str(tmp_path / "mar")], check=True, cwd=REPO, capture_output=True)
    with zipfile.ZipFile(tmp_path / "mar" / "cub_tiny.mar") as mar:
        assert "hardness.pt" in mar.namelist()
    # --cub-train test: two of the three test images train, one is held out
    assert main(args + ["--cub-train", "test", "--held-out", "0.34", "--out", str(tmp_path / "hp2")]) == 0
    report = json.loads((tmp_path / "hp2" / "report.json").read_text())
    assert report["train_images"] == 2 and report["held_out"]["images"] == 1


def test_train_hardness_cli_bad_input_exits_2(tmp_path, resnet_weights, capsys):
    (tmp_path / "data" / "not-a-label").mkdir(parents=True)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    base = ["train-hardness", str(tmp_path / "data"), "--arch", "resnet18", "--state-dict", str(resnet_weights),
            "--out", str(tmp_path / "o")]
    assert main(base + ["--labels", str(labels)]) == 2
    assert "'not-a-label' is not a label" in capsys.readouterr().err
    assert main(base) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(base + ["--labels", str(labels), "--epochs", "0"]) == 2
    assert "--epochs: must be >= 1" in capsys.readouterr().err
