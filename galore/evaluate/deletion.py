"""Deletion and insertion AUC of attributive maps (RISE: Petsiuk, Das & Saenko, BMVC 2018).

Deletion removes the crop's pixels in the map's order, most salient first, replacing them with the baseline, and
follows the probability of the explained class: a faithful map makes it fall fast (low AUC is better). Insertion
starts from the baseline and puts the pixels back in the same order: the probability should rise fast (high AUC
is better). Curves are sampled at ``steps`` + 1 equally spaced fractions; the AUC is the trapezoid over [0, 1].

References on the same photos and baseline: a random map (noise on the feature grid, upsampled like the maps) and
Grad-CAM from pytorch-grad-cam (Selvaraju et al. 2017) at layer F.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..options import Kind
from .common import (Baseline, Photo, Progress, Scorer, Setting, baseline, kind_map, mean, pixel_order, quiet,
                     random_maps, replaced, seeded)

RANDOM = "random map"
GRAD_CAM_REFERENCE = "pytorch-grad-cam GradCAM"


@dataclass(frozen=True)
class Curves:
    """One map of one photo: probability of the explained class at each fraction removed / inserted."""

    photo: str
    method: str  # a setting's name, RANDOM or GRAD_CAM_REFERENCE
    class_id: int
    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return auc(self.fractions, self.insertion)


@dataclass
class DeletionReport:
    baseline: Baseline
    steps: int
    curves: list[Curves] = field(default_factory=list)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(c.method for c in self.curves))

    def summary(self) -> list[dict]:
        """Per method: mean deletion AUC (lower is better), mean insertion AUC (higher), and their difference."""
        rows = []
        for m in self.methods():
            cs = [c for c in self.curves if c.method == m]
            d, i = mean([c.deletion_auc for c in cs]), mean([c.insertion_auc for c in cs])
            rows.append({"method": m, "photos": len(cs), "deletion_auc": d, "insertion_auc": i,
                         "insertion_minus_deletion": i - d})
        return rows

    def to_dict(self) -> dict:
        return {"metric": "deletion", "baseline": self.baseline.value, "steps": self.steps,
                "summary": self.summary(),
                "curves": [{"photo": c.photo, "method": c.method, "class_id": c.class_id,
                            "fractions": c.fractions.tolist(), "deletion": c.deletion.tolist(),
                            "insertion": c.insertion.tolist(), "deletion_auc": c.deletion_auc,
                            "insertion_auc": c.insertion_auc} for c in self.curves]}


def auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under values(fractions)."""
    f, v = np.asarray(fractions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2.0)


def counts_for(pixels: int, steps: int) -> np.ndarray:
    """Pixels removed at each of ``steps`` + 1 points: round(i * pixels / steps)."""
    return np.round(np.arange(steps + 1) * pixels / steps).astype(np.int64)


def probabilities(scorer: Scorer, x: torch.Tensor, order: torch.Tensor, base: torch.Tensor, class_id: int,
                  counts: Sequence[int], insert: bool = False) -> np.ndarray:
    """Softmax probability of ``class_id`` after removing (or, with ``insert``, restoring onto ``base``) the first
    counts[i] pixels of ``order`` (flat indices into the S x S crop), for each i."""
    side = x.shape[-1]
    masks = torch.zeros(len(counts), side * side, dtype=torch.bool, device="cpu")
    for i, k in enumerate(counts):
        masks[i, order[:int(k)]] = True
    masks = masks.view(len(counts), side, side)
    inputs = replaced(base, x, masks) if insert else replaced(x, base, masks)
    return scorer.logits(inputs).softmax(-1)[:, class_id].numpy()


def curves_of(scorer: Scorer, photo: str, method: str, x: torch.Tensor, saliency: torch.Tensor,
              base: torch.Tensor, class_id: int, steps: int) -> Curves:
    """Both curves for one (S, S) saliency map."""
    order = pixel_order(saliency, seeded(photo, method, "order"))
    counts = counts_for(saliency.numel(), steps)
    fractions = counts / saliency.numel()
    return Curves(photo, method, class_id, fractions,
                  probabilities(scorer, x, order, base, class_id, counts),
                  probabilities(scorer, x, order, base, class_id, counts, insert=True))


def grad_cam_map(scorer: Scorer, x: torch.Tensor, class_id: int) -> torch.Tensor:
    """pytorch-grad-cam's GradCAM of ``class_id`` at layer F, (S, S) (its own upsampling)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model = torch.nn.Sequential(scorer.split.backbone, scorer.split.head).eval()
    with GradCAM(model, target_layers=[model[0]]) as cam:
        return torch.from_numpy(cam(x[None], targets=[ClassifierOutputTarget(class_id)])[0]).float()


def evaluate_deletion(scorer: Scorer, photos: Sequence[Photo], settings: Sequence[Setting],
                      base: Baseline = Baseline.BLUR, steps: int = 50, references: bool = True,
                      progress: Progress = quiet) -> DeletionReport:
    """Deletion and insertion curves of the attributive map (eq. 3) of the predicted class under each setting,
    plus (``references``) a random map and pytorch-grad-cam's GradCAM, on every photo."""
    report = DeletionReport(base, steps)
    for photo in photos:
        x = scorer.input(photo.image)
        b = baseline(x, base)
        y = int(scorer.logits(x[None])[0].argmax())
        for s in settings:
            progress(f"deletion {photo.name} {s.name}")
            heat = kind_map(scorer.maps(x, [y], s.options), Kind.ATTRIBUTIVE, [y])
            report.curves.append(curves_of(scorer, photo.name, s.name, x, scorer.upsample(heat[None])[0], b, y,
                                           steps))
        if references:
            progress(f"deletion {photo.name} references")
            grid = scorer.split.feature_shape[1:]
            noise = scorer.upsample(random_maps(1, grid, seeded(photo.name, "random map")))[0]
            report.curves.append(curves_of(scorer, photo.name, RANDOM, x, noise, b, y, steps))
            report.curves.append(curves_of(scorer, photo.name, GRAD_CAM_REFERENCE, x, grad_cam_map(scorer, x, y),
                                           b, y, steps))
    return report
