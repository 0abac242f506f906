"""Training a torchvision classifier on a dataset in the CUB-200-2011 layout, for the proxy protocol (GALORE TPAMI
2023 §VI-B) and for serving (``python -m model_store.build torchvision``).

The default, ``mobilenet_v3_small`` explained at F = ``features.8`` (48 x 14 x 14 at 224 px, the 14 x 14 grid of
the paper's VGG16), has a non-linear head after F: four inverted-residual blocks with squeeze-excitation, a 1 x 1
convolution, pooling and a two-layer MLP (Linear, Hardswish, Linear). d logit / dF then varies over F, so the
attribution functions of §V-A (eqs. 18-20) give different maps, which a pooling + linear head cannot (EVALUATION.md).

Images are read whole and resized to ``input_size`` (the protocol's default geometry "resize"), normalised with
ImageNet statistics (``zoo.IMAGENET_PREPROCESS``), and kept decoded in memory. Training: AdamW, cosine learning
rate, random horizontal flips and shifts; after the last epoch the batch-norm statistics are re-estimated on the
training images (a cumulative average, so a short run's running statistics are not stale).

Outputs in ``out``: ``checkpoint.pt`` (rewritten every epoch; ``resume`` continues from it), ``weights.pt``
(weights-only state dict, what ``--state-dict`` takes), ``labels.txt`` (classes.txt's names, class-id order) and
``report.json`` (training loss and top-1 per epoch; held-out top-1 / top-5 and confusion matrix of the final
model; wall and CPU seconds of this process, threads; ``weights_sha256``, the final weights' fingerprint). The held-out split is judged once, at the end: before the
batch-norm statistics are re-estimated, an early MobileNetV3's running statistics make eval-mode accuracy
meaningless (one class everywhere).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import zoo
from .errors import InvalidArgument

CHECKPOINT, WEIGHTS, LABELS, REPORT = "checkpoint.pt", "weights.pt", "labels.txt", "report.json"


@dataclass(frozen=True)
class ClassifierTraining:
    """arch (zoo.TORCHVISION_ARCHS) and layer (the F it is explained at, recorded for the protocol and the archive);
    epochs, batch_size, lr (AdamW peak, cosine decay), weight_decay; input_size: the side images are resized to;
    shift: random translation in pixels (0: none); seed: initialisation, shuffling, augmentation."""

    arch: str = "mobilenet_v3_small"
    layer: str | None = "features.8"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    input_size: int = 224
    shift: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.arch not in zoo.TORCHVISION_ARCHS:
            raise InvalidArgument("arch", f"unsupported architecture {self.arch!r}; choose one of "
                                          f"{', '.join(zoo.TORCHVISION_ARCHS)}")
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.shift < 0:
            raise InvalidArgument("lr", f"lr must be > 0, weight_decay and shift >= 0, got {self.lr}, "
                                        f"{self.weight_decay}, {self.shift}")


def load_images(cub, ids: Sequence[int], input_size: int) -> TensorDataset:
    """(x, y): x (N, 3, S, S) uint8, every image of ``ids`` resized whole to S x S (bilinear, antialiased);
    y (N,) the 0-based class. Normalisation happens per batch (``normalise``)."""
    import torchvision.transforms.v2.functional as TF

    x = torch.empty((len(ids), 3, input_size, input_size), dtype=torch.uint8, device="cpu")  # host data set
    for n, i in enumerate(ids):
        x[n] = TF.resize(cub.image(i), [input_size, input_size], antialias=True)
    return TensorDataset(x, torch.tensor([cub.labels[i] for i in ids], device="cpu"))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> the network input, ImageNet mean and std (zoo.IMAGENET_PREPROCESS)."""
    p = zoo.IMAGENET_PREPROCESS
    mean = torch.tensor(p.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def _augment(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip per image and one random shift per batch (padding by edge replication)."""
    flip = (torch.rand(len(x), generator=generator, device=generator.device) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift:
        dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator,
                                                     device=generator.device))
        padded = nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        s = x.shape[-1]
        x = padded[..., shift + dy:shift + dy + s, shift + dx:shift + dx + s]
    return x


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict's names, dtypes, shapes and values in order: equal only for bit-identical
    weights, whatever file they were saved in.

    >>> weights_fingerprint({"w": torch.zeros(2)}) == weights_fingerprint({"w": torch.zeros(2)})
    True
    >>> weights_fingerprint({"w": torch.zeros(2)}) == weights_fingerprint({"w": torch.tensor([0.0, 1e-30])})
    False
    """
    digest = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def predict(model: nn.Module, data: TensorDataset, batch_size: int = 64) -> torch.Tensor:
    """(N, C) logits of ``model`` (eval mode) on ``data``."""
    model.eval()
    out = [model(normalise(x)) for x, _ in DataLoader(data, batch_size=batch_size)]
    return torch.cat(out)


def accuracy_report(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top-1, top-5 (top-C when fewer classes) and the confusion matrix (true class rows, predicted columns)."""
    c = logits.shape[1]
    top = logits.topk(min(5, c), dim=1).indices  # (N, 5)
    confusion = torch.zeros((c, c), dtype=torch.long, device=labels.device)
    confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    return {"top1": float((top[:, 0] == labels).float().mean()),
            "top5": float((top == labels[:, None]).any(1).float().mean()),
            "images": int(len(labels)), "confusion": confusion.tolist()}


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, data: TensorDataset, batch_size: int) -> None:
    """Re-estimates every BatchNorm's running mean and variance as the cumulative average over ``data``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in DataLoader(data, batch_size=batch_size):
        model(normalise(x))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def train_classifier(train: TensorDataset, held_out: TensorDataset, labels: Sequence[str], out: str | Path,
                     config: ClassifierTraining = ClassifierTraining(), resume: bool = False,
                     progress: bool = True, log: Callable[[str], None] = print,
                     provenance: dict | None = None) -> dict:
    """Trains ``config.arch`` with len(labels) outputs on ``train`` ((uint8 image, class) pairs, see
    ``load_images``), judges it on ``held_out`` after every epoch, writes the outputs of the module docstring and
    returns the report. ``resume`` continues from out/checkpoint.pt, which must have been written with the same
    ``config`` and ``provenance`` (what else made the weights, e.g. the CPU kernels; stored in the checkpoint)."""
    from tqdm import tqdm

    if len(train) == 0 or len(held_out) == 0:
        raise InvalidArgument("data", f"need training and held-out images, got {len(train)} and {len(held_out)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = zoo.torchvision_classifier(config.arch, len(labels))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps, pct_start=0.15)
    start, history, seconds = 0, [], 0.0
    if resume and (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if state.get("config") != asdict(config):
            raise InvalidArgument("resume", f"{out / CHECKPOINT} was written with other settings: "
                                            f"{state.get('config')}")
        if state.get("provenance") != provenance:
            raise InvalidArgument("resume", f"{out / CHECKPOINT} was written with other provenance: "
                                            f"{state.get('provenance')}, not {provenance}")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, history, seconds = int(state["epoch"]), list(state["history"]), float(state["seconds"])
        log(f"resuming after epoch {start} of {config.epochs}")
    generator = torch.Generator().manual_seed(config.seed)
    cpu_began = time.process_time()
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        model.train()
        generator.manual_seed(config.seed + epoch)
        loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, generator=generator)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        total, right, seen = 0.0, 0, 0
        for x, y in bar:
            x = normalise(_augment(x, config.shift, generator))
            logits = model(x)  # (B, C)
            loss = nn.functional.cross_entropy(logits, y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(x)
            right += int((logits.detach().argmax(1) == y).sum())
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.3f}", acc=f"{right / seen:.3f}")
        seconds += time.perf_counter() - began
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "train_top1": right / max(seen, 1)})
        torch.save({"model": model.state_dict(), "optimizer": optimiser.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch + 1, "history": history, "seconds": seconds,
                    "config": asdict(config), "provenance": provenance}, out / CHECKPOINT)
        log(f"epoch {epoch + 1}/{config.epochs}: train loss {total / max(seen, 1):.3f}, "
            f"train top-1 {right / max(seen, 1):.3f} (augmented, while learning)")
    began = time.perf_counter()
    recalibrate_batch_norm(model, train, config.batch_size)
    seconds += time.perf_counter() - began
    torch.save(model.state_dict(), out / WEIGHTS)
    (out / LABELS).write_text("".join(f"{name}\n" for name in labels), encoding="utf-8")
    final = accuracy_report(predict(model, held_out, config.batch_size), held_out.tensors[1])
    log(f"held-out top-1 {final['top1']:.3f}, top-5 {final['top5']:.3f} ({final['images']} images)")
    report = {"config": asdict(config), "train_images": len(train), "held_out": final, "history": history,
              "train_seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - cpu_began, 1),
              "threads": torch.get_num_threads(), "weights_sha256": weights_fingerprint(model.state_dict())}
    (out / REPORT).write_text(json.dumps(report) + "\n", encoding="utf-8")
    return report

