"""Training a hardness predictor for the easiness score (eq. 23): the realistic predictor of Wang & Vasconcelos
(ECCV 2018 "Towards realistic predictors"; NeurIPS 2019 §3), trained post hoc against a frozen classifier.

The predictor is a torchvision backbone with ONE output read through a sigmoid, s^hp(x) in [0, 1]. Its target for
image x of class y is the classifier's difficulty 1 - h_y(x) (h the frozen classifier's softmax), and it is trained
with binary cross-entropy on that soft target. The saved weights load where the engine takes a hardness predictor:
``Engine.from_torchvision(..., hardness_arch=ARCH, hardness_state_dict=PATH)`` and
``python -m model_store.build torchvision ... --hardness-arch ARCH --hardness-state-dict PATH``.

Train on images the classifier did not fit (a held-out or validation set): on its own training images a classifier
is near-certain and the targets are all ~0. The held-out report gives the Spearman correlation between predicted
hardness and the classifier's error (0/1) and its difficulty (1 - h_y) on images the predictor never saw.

Outputs in ``out``: ``checkpoint.pt`` (model, optimiser, epoch; rewritten every epoch, resumable),
``hardness.pt`` (weights-only state dict of the predictor), ``report.json``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import zoo
from .errors import InvalidArgument, ModelError

CHECKPOINT, WEIGHTS, REPORT = "checkpoint.pt", "hardness.pt", "report.json"


@dataclass(frozen=True)
class HardnessTraining:
    """arch: torchvision architecture of the predictor (zoo.TORCHVISION_ARCHS); init: optional state dict of that
    architecture with one output to start from; epochs, batch_size, lr (Adam), weight_decay; flip: random
    horizontal flips while training; seed: initialisation and shuffling."""

    arch: str = "resnet18"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    flip: bool = True
    seed: int = 0
    init: str | None = None

    def __post_init__(self):
        if self.arch not in zoo.TORCHVISION_ARCHS:
            raise InvalidArgument("arch", f"unsupported architecture {self.arch!r}; choose one of "
                                          f"{', '.join(zoo.TORCHVISION_ARCHS)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise InvalidArgument("lr", f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


@dataclass(frozen=True)
class HeldOutReport:
    """On held-out images: n, the classifier's accuracy, and the Spearman correlations of predicted hardness with
    the classifier's error (0/1) and with its difficulty 1 - h_y(x); mean predicted hardness on errors and on
    correct predictions."""

    images: int
    classifier_accuracy: float
    spearman_error: float | None
    spearman_difficulty: float | None
    hardness_on_errors: float | None
    hardness_on_correct: float | None


@torch.no_grad()
def classifier_targets(classifier: nn.Module, data: Dataset, batch_size: int = 64,
                       device: torch.device | str = "cpu", progress: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Difficulty 1 - h_y(x) (N,) and error (N,) bool of the frozen ``classifier`` on every (x, y) of ``data``."""
    from tqdm import tqdm

    classifier = classifier.to(device).eval()
    difficulty, errors = [], []
    for x, y in tqdm(DataLoader(data, batch_size=batch_size), desc="classifier", disable=not progress,
                     leave=False):
        probs = classifier(x.to(device)).softmax(-1).cpu()
        difficulty.append(1 - probs.gather(1, y[:, None])[:, 0])
        errors.append(probs.argmax(1) != y)
    return torch.cat(difficulty), torch.cat(errors)


def spearman(x, y) -> float | None:
    """Spearman rank correlation (ties get average ranks); None when either side is constant or n < 2."""
    x, y = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(len(a), dtype=np.float64)
    values, inverse = np.unique(a, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def new_predictor(config: HardnessTraining) -> nn.Module:
    torch.manual_seed(config.seed)
    if config.init is not None and not Path(config.init).is_file():
        raise InvalidArgument("init", f"{config.init} does not exist")
    try:
        return zoo.torchvision_classifier(config.arch, 1, config.init)
    except ModelError as exc:
        raise InvalidArgument("init", exc.message) from None


def train_hardness(classifier: nn.Module, train: Dataset, held_out: Dataset, out: str | Path,
                   config: HardnessTraining = HardnessTraining(), device: torch.device | str = "cpu",
                   resume: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> HeldOutReport:
    """Trains the predictor on ``train`` ((x, y) pairs, x the classifier's network input) against the frozen
    ``classifier``; writes checkpoint.pt every epoch, hardness.pt and report.json at the end (see module docstring).
    ``resume``: continue from ``out``/checkpoint.pt."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if len(train) == 0 or len(held_out) == 0:
        raise InvalidArgument("data", f"need training and held-out images, got {len(train)} and {len(held_out)}")
    difficulty, _ = classifier_targets(classifier, train, config.batch_size, device, progress)
    model = new_predictor(config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    if resume and (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
        if state.get("arch") != config.arch:
            raise InvalidArgument("resume", f"{out / CHECKPOINT} holds a {state.get('arch')} predictor, "
                                            f"not {config.arch}")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        log(f"resuming after epoch {start} of {config.epochs}")
    indexed = _Indexed(train)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(start, config.epochs):
        model.train()
        generator.manual_seed(config.seed + epoch)
        loader = DataLoader(indexed, batch_size=config.batch_size, shuffle=True, generator=generator)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        total, seen = 0.0, 0
        for x, index in bar:
            x = x.to(device)
            if config.flip:
                flip = torch.rand(len(x), generator=generator, device="cpu") < 0.5
                x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
            target = difficulty[index].to(device)
            loss = loss_fn(model(x)[:, 0], target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(x)
            seen += len(x)
            bar.set_postfix(bce=f"{total / seen:.4f}")
        torch.save({"arch": config.arch, "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                    "epoch": epoch + 1, "config": asdict(config)}, out / CHECKPOINT)
        log(f"epoch {epoch + 1}/{config.epochs}: train BCE {total / max(seen, 1):.4f}")
    model.eval()
    torch.save(model.state_dict(), out / WEIGHTS)
    report = held_out_report(classifier, model, held_out, config.batch_size, device)
    (out / REPORT).write_text(json.dumps({"config": asdict(config), "held_out": asdict(report),
                                          "train_images": len(train)}, indent=2) + "\n", encoding="utf-8")
    return report


@torch.no_grad()
def predicted_hardness(model: nn.Module, data: Dataset, batch_size: int = 64,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """s^hp(x) (N,) of the predictor on every x of ``data``."""
    model.eval()
    return torch.cat([torch.sigmoid(model(x.to(device))[:, 0]).cpu() for x, _ in DataLoader(data, batch_size)])


def held_out_report(classifier: nn.Module, model: nn.Module, held_out: Dataset, batch_size: int = 64,
                    device: torch.device | str = "cpu") -> HeldOutReport:
    difficulty, errors = classifier_targets(classifier, held_out, batch_size, device)
    hardness = predicted_hardness(model, held_out, batch_size, device).numpy()
    err = errors.numpy()

    def mean(mask) -> float | None:
        return float(hardness[mask].mean()) if mask.any() else None

    return HeldOutReport(len(err), float(1 - err.mean()), spearman(hardness, err.astype(np.float64)),
                         spearman(hardness, difficulty.numpy()), mean(err), mean(~err))


class _Indexed(Dataset):
    """(x, index) of a dataset of (x, y): the loop looks the target up by index."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        return self.data[i][0], i


def split_indices(n: int, held_out: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded split of range(n) into (train, held-out) with round(held_out x n) >= 1 held-out indices."""
    if not 0.0 < held_out < 1.0:
        raise InvalidArgument("held_out", f"must be in (0, 1), got {held_out}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    k = max(1, int(math.floor(held_out * n + 0.5)))
    if k >= n:
        raise InvalidArgument("held_out", f"{n} images leave nothing to train on")
    return sorted(order[k:]), sorted(order[:k])


def tensor_dataset(x: torch.Tensor, y: torch.Tensor) -> TensorDataset:
    return TensorDataset(x, y.long())
