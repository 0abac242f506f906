"""`galore train-hardness` core on a real image set shipped in a package: scikit-learn's 8 x 8 digits (1797
scans), upscaled to 16 x 16 RGB. A small classifier is trained first (kept weak, so it errs on held-out images);
the hardness predictor must then rank its held-out errors above its correct predictions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from galore import Engine, ImageRequest, zoo
from galore.hardness_training import (HardnessTraining, held_out_report, spearman, split_indices, tensor_dataset,
                                      train_hardness)
from galore.options import ExplainOptions, Score


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = nn.functional.interpolate(x, size=16, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return ((x - 0.5) / 0.5).contiguous(), torch.from_numpy(d.target).long()


def small_classifier(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A linear classifier on 8 x 8 average-pooled pixels, 10 full-batch steps: ~85 % accurate on unseen digits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(10):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_spearman_matches_scipy_with_ties():
    from scipy import stats

    a = np.array([0.1, 0.4, 0.4, 0.9, 0.2, 0.2, 0.7])
    b = np.array([0, 1, 1, 1, 0, 1, 0], dtype=float)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads made each step ~7x slower (EVALUATION.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_predicted_hardness_ranks_held_out_errors(tmp_path, one_thread):
    x, y = digits()
    # the classifier is fitted on one third; the predictor trains on another and is judged on the last
    order = np.random.default_rng(0).permutation(len(y))
    fit, rest = order[:600], order[600:]
    classifier = small_classifier(x[fit], y[fit])
    data = tensor_dataset(x[rest], y[rest])
    train_idx, held_idx = split_indices(len(data), 0.4, seed=0)
    train, held = Subset(data, train_idx), Subset(data, held_idx)
    config = HardnessTraining(arch="resnet18", epochs=6, batch_size=64, lr=3e-3, flip=False, seed=0)
    report = train_hardness(classifier, train, held, tmp_path, config, progress=False, log=lambda _: None)
    assert report.images == len(held_idx) and 0.6 < report.classifier_accuracy < 0.95  # it does err
    assert report.spearman_error is not None and report.spearman_error > 0.2  # 0.46 measured
    assert report.spearman_difficulty > 0.4  # 0.75 measured
    assert report.hardness_on_errors > report.hardness_on_correct
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["held_out"]["spearman_error"] == pytest.approx(report.spearman_error)
    # the weights load where the engine and model_store/build.py take a hardness predictor
    from model_store.build import _check_state_dict

    _check_state_dict(tmp_path / "hardness.pt", "--hardness-state-dict")
    engine = Engine.from_torchvision("resnet18", [str(i) for i in range(10)], hardness_arch="resnet18",
                                     hardness_state_dict=str(tmp_path / "hardness.pt"), device="cpu")
    img = ((x[held_idx[0]] * 0.5 + 0.5) * 255).round().to(torch.uint8)
    (res,) = engine.explain([ImageRequest(img, ExplainOptions(kinds=frozenset(), score=Score.EASINESS))])
    assert res.ok and 0.0 <= res.score <= 1.0
    # resuming after the last epoch retrains nothing and reproduces the report
    again = train_hardness(classifier, train, held, tmp_path, config, resume=True, progress=False,
                           log=lambda _: None)
    assert again == report
    reloaded = zoo.torchvision_classifier("resnet18", 1, tmp_path / "hardness.pt")
    assert held_out_report(classifier, reloaded, held) == report
