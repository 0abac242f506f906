"""Transport-agnostic typed results: what the client, the CLI and the report renderer work on.

Everything is plain numpy, whichever way the result came (gRPC, REST or the in-process engine):
``Region.mask`` is ``(H0, W0)`` bool in ORIGINAL image pixels; ``Region.heatmap`` is ``(h, w)`` float32 on the
model's feature grid, covering the centre crop ``Explanation.crop_box``; class ids are indices into the model's
labels and always travel with their label.

Example:
    >>> region = Region.from_mask(np.eye(4, dtype=bool), strength=0.5)
    >>> region.pixel_count, region.bbox
    (4, (0, 0, 4, 4))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class ClassRef:
    """One class of the model: its index and its human-readable label."""

    class_id: int
    label: str

    def __str__(self) -> str:
        return self.label or str(self.class_id)


@dataclass(frozen=True)
class ClassScore:
    """A top class with its probability h_y(x) in [0, 1]."""

    class_id: int
    label: str
    probability: float


@dataclass(frozen=True)
class Region:
    """A thresholded explanation map and its strength (eq. 15).

    mask: (H0, W0) bool in original image pixels.
    strength: mean of the map inside the mask, in the map's units; 0 for an empty mask.
    pixel_count: number of True pixels in ``mask``.
    bbox: (x0, y0, x1, y1) half-open pixel box of the mask, or None when the mask is empty.
    heatmap: (h, w) float32 feature-grid map the mask was cut from, when the server sent it.
    """

    mask: np.ndarray
    strength: float
    pixel_count: int
    bbox: tuple[int, int, int, int] | None
    heatmap: np.ndarray | None = None

    @staticmethod
    def from_mask(mask: np.ndarray, strength: float, heatmap: np.ndarray | None = None) -> "Region":
        """Builds a region from a bool mask, computing its pixel count and bounding box."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H0, W0), got shape {mask.shape}")
        return Region(mask=mask, strength=float(strength), pixel_count=int(mask.sum()), bbox=mask_bbox(mask),
                      heatmap=None if heatmap is None else np.asarray(heatmap, dtype=np.float32))


@dataclass(frozen=True)
class Attributive:
    """Eq. (3) (plain) or eq. (4) (self-aware) for ``cls``: the prediction, or the class the settings asked to
    explain (``explained_class``); ``probability`` is the model's h_c(x) for it."""

    cls: ClassRef
    region: Region
    probability: float = 0.0


@dataclass(frozen=True)
class Insecurity:
    """One deliberative insecurity: a region the model found ambiguous between ``classes`` (V of them)."""

    classes: tuple[ClassRef, ...]
    region: Region

    @property
    def strength(self) -> float:
        return self.region.strength

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.classes)


@dataclass(frozen=True)
class ExemplarSide:
    """The counter-class side of a counterfactual; ``region`` is None when no exemplar was available."""

    cls: ClassRef
    exemplar_key: str | None
    region: Region | None
    missing_reason: str = ""


@dataclass(frozen=True)
class Counterfactual:
    """Eqs. (7)/(13): why ``predicted`` and not ``counter``; query region plus one side per counter class."""

    predicted: ClassRef
    counter: tuple[ClassRef, ...]
    query: Region
    exemplars: tuple[ExemplarSide, ...]
    strength: float
    complete: bool


@dataclass(frozen=True)
class ImageFailure:
    """Why one image of a batch got no explanation: a status code name (e.g. INVALID_ARGUMENT) and message."""

    code: str
    message: str
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field and not self.message.startswith(self.field) else ""
        return f"{self.code}: {where}{self.message}"


@dataclass(frozen=True)
class Explanation:
    """Everything said about one image, or the failure that stopped it (then only ``error`` is meaningful).

    width, height: original image size in pixels (W0, H0).
    crop_box: (x0, y0, x1, y1) region of the original image the feature-grid heatmaps cover, when known.
    deliberative: V -> insecurities, strongest first.
    """

    width: int = 0
    height: int = 0
    top_classes: tuple[ClassScore, ...] = ()
    score_name: str = ""
    score: float = 0.0
    attributive: Attributive | None = None
    self_aware: Attributive | None = None
    deliberative: Mapping[int, tuple[Insecurity, ...]] = field(default_factory=dict)
    counterfactual: Counterfactual | None = None
    crop_box: tuple[int, int, int, int] | None = None
    error: ImageFailure | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def predicted(self) -> ClassScore | None:
        return self.top_classes[0] if self.top_classes else None

    @property
    def insecurities(self) -> tuple[Insecurity, ...]:
        """All insecurities over every V, strongest first."""
        every = [ins for group in self.deliberative.values() for ins in group]
        return tuple(sorted(every, key=lambda ins: ins.strength, reverse=True))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Half-open (x0, y0, x1, y1) box of the True pixels of a (H, W) mask, or None when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def center_crop_box(width: int, height: int, crop: int, resize: int | None = None) -> tuple[int, int, int, int]:
    """Box in original pixels seen by a model that resizes the shorter side to ``resize`` (default the ImageNet
    ratio, crop / 0.875) and centre-crops ``crop`` x ``crop``, rounded outwards to whole pixels."""
    resize = resize or round(crop / 0.875)
    if min(width, height) == height:
        rh, rw = resize, max(1, int(resize * width / height))
    else:
        rh, rw = max(1, int(resize * height / width)), resize
    top, left = round((rh - crop) / 2.0), round((rw - crop) / 2.0)
    sx, sy = rw / width, rh / height
    x0, y0 = max(0, math.floor(left / sx)), max(0, math.floor(top / sy))
    x1, y1 = min(width, math.ceil((left + crop) / sx)), min(height, math.ceil((top + crop) / sy))
    return x0, y0, x1, y1
