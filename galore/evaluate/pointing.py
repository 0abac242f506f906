"""Grid pointing game (Böhle, Fritz & Schiele, "Convolutional dynamic alignment networks", CVPR 2021; the
"pointing game" of Zhang et al., ECCV 2016): 2 x 2 mosaics of real photos, each cell a photo the model classifies
alone as a different class. The attributive map explaining the class of one cell (ExplainOptions.explained_class)
should point into that cell.

Per (mosaic, cell): ``hit`` is 1 when the map's maximum lies in the cell; ``share`` is the cell's fraction of the
map's positive mass (Böhle et al.'s localisation score). Chance is 0.25 for both. Grad-CAM (pytorch-grad-cam) of
the same class is the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..engine import ImageRequest
from ..errors import InvalidArgument
from ..options import Kind
from .common import Photo, Progress, Scorer, Setting, mean, quiet

CELLS = 4  # 2 x 2
GRAD_CAM_REFERENCE = "pytorch-grad-cam GradCAM"


@dataclass(frozen=True)
class Pointing:
    mosaic: str  # the photo names, row by row, joined by '+'
    cell: int  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    class_id: int
    method: str
    hit: bool
    share: float


@dataclass
class PointingReport:
    trials: list[Pointing] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # mosaics whose cells did not have 4 distinct classes

    def summary(self) -> list[dict]:
        rows = []
        for m in dict.fromkeys(t.method for t in self.trials):
            ts = [t for t in self.trials if t.method == m]
            rows.append({"method": m, "trials": len(ts), "hit_rate": mean([float(t.hit) for t in ts]),
                         "energy_share": mean([t.share for t in ts]), "chance": 1.0 / CELLS})
        return rows

    def to_dict(self) -> dict:
        return {"metric": "pointing", "summary": self.summary(), "skipped": self.skipped,
                "trials": [t.__dict__ for t in self.trials]}


def square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Centre square of a (3, H, W) uint8 image resized to side x side (antialiased bilinear), uint8."""
    from torchvision.transforms.functional import center_crop, resize
    s = min(image.shape[1:])
    return resize(center_crop(image, [s, s]), [side, side], antialias=True)


def mosaic(images: Sequence[torch.Tensor], tile: int) -> torch.Tensor:
    """Four images -> (3, 2 tile, 2 tile) uint8 mosaic, row by row."""
    if len(images) != CELLS:
        raise InvalidArgument("photos", f"a mosaic needs {CELLS} photos, got {len(images)}")
    t = [square(im, tile) for im in images]
    return torch.cat([torch.cat(t[:2], dim=2), torch.cat(t[2:], dim=2)], dim=1)


def cell_masks(side: int) -> torch.Tensor:
    """(4, side, side) bool: the quadrants of the S x S crop (of a square mosaic the centre crop keeps their
    boundaries at the middle)."""
    half = side // 2
    out = torch.zeros(CELLS, side, side, dtype=torch.bool, device="cpu")
    out[0, :half, :half] = out[1, :half, half:] = out[2, half:, :half] = out[3, half:, half:] = True
    return out


def score_map(saliency: torch.Tensor, cells: torch.Tensor, cell: int) -> tuple[bool, float]:
    """(hit, share) of one (S, S) map for ``cell``: the map's maximum falls in the cell (the first maximum in
    row-major order); the cell's share of the positive mass (0 when there is none)."""
    flat = int(torch.argmax(saliency))
    hit = bool(cells[cell].flatten()[flat])
    positive = saliency.clamp_min(0)
    total = float(positive.sum())
    return hit, float(positive[cells[cell]].sum()) / total if total > 0 else 0.0


def mosaics_of(names: Sequence[str]) -> list[list[int]]:
    """Which photos each mosaic tiles: with n >= 4 photos, mosaic i takes photos i, i+1, i+2, i+3 (mod n), so
    every photo appears in every cell position once over n mosaics."""
    n = len(names)
    if n < CELLS:
        raise InvalidArgument("photos", f"the pointing game needs at least {CELLS} photos, got {n}")
    return [[(i + j) % n for j in range(CELLS)] for i in range(n)]


def evaluate_pointing(engine, photos: Sequence[Photo], settings: Sequence[Setting], references: bool = True,
                      progress: Progress = quiet) -> PointingReport:
    """The grid pointing game over ``mosaics_of(photos)`` for every setting (and Grad-CAM with ``references``)."""
    scorer = Scorer.of(engine)
    side = scorer.side
    tile = max(1, engine.preprocess.resize // 2)
    labels = [int(scorer.logits(scorer.input(p.image)[None])[0].argmax()) for p in photos]
    cells = cell_masks(side)
    report = PointingReport()
    for idx in mosaics_of([p.name for p in photos]):
        name = "+".join(photos[i].name for i in idx)
        classes = [labels[i] for i in idx]
        if len(set(classes)) < CELLS:
            report.skipped.append(name)
            continue
        image = mosaic([photos[i].image for i in idx], tile)
        x = scorer.input(image)
        for s in settings:
            progress(f"pointing {name} {s.name}")
            requests = [ImageRequest(image, s.with_kinds(Kind.ATTRIBUTIVE, explained_class=c)) for c in classes]
            for cell, (c, res) in enumerate(zip(classes, engine.explain(requests))):
                if res.error is not None:
                    raise res.error
                heat = scorer.upsample(res.attributive.region.heatmap[None])[0]
                report.trials.append(Pointing(name, cell, c, s.name, *score_map(heat, cells, cell)))
        if references:
            from .deletion import grad_cam_map
            for cell, c in enumerate(classes):
                report.trials.append(Pointing(name, cell, c, GRAD_CAM_REFERENCE,
                                              *score_map(grad_cam_map(scorer, x, c), cells, cell)))
    return report
