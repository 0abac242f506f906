"""What the engine returns per image. Masks are in ORIGINAL image pixels; heatmaps on the feature grid.

Shapes: ``cells`` (G, G) bool on the working grid over the centre crop; ``mask`` (H0, W0) bool for an original
image of H0 x W0 pixels, built from ``cells`` on first access; ``heatmap`` (h, w) float32 on the feature grid of
layer F (e.g. 7 x 7 for EfficientNet-Lite0 at 224 px), covering the centre crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from .errors import GaloreError
from .masks import CellFrame


@dataclass(frozen=True)
class ClassScore:
    class_id: int
    label: str
    probability: float  # h_y(x) in [0, 1]


@dataclass(frozen=True, eq=False)
class Region:
    """A thresholded heatmap (eqs. 6, 8, 9) with its strength.

    cells: (G, G) bool numpy mask on the working grid over the centre crop, where it was thresholded.
    frame: which cell each original pixel falls in; ``mask`` and the wire encodings follow from it exactly.
    heatmap: (h, w) float32 feature-grid map the mask was cut from (the combined map of eq. 2).
    strength: mean of the map over the kept working-grid cells (eq. 15), in the map's units; 0 for an empty mask.
    pixel_count: number of True pixels in ``mask`` (original pixels).
    bbox: (x0, y0, x1, y1) half-open pixel box of the mask in the original image, or None when empty.
    """

    cells: np.ndarray
    frame: CellFrame
    heatmap: torch.Tensor
    strength: float
    pixel_count: int
    bbox: tuple[int, int, int, int] | None

    @classmethod
    def of(cls, cells: np.ndarray, frame: CellFrame, heatmap: torch.Tensor, strength: float) -> "Region":
        return cls(cells, frame, heatmap, strength, frame.pixel_count(cells), frame.bbox(cells))

    @cached_property
    def mask(self) -> torch.Tensor:
        """(H0, W0) bool in original pixels; pixels outside the centre crop are False. Built on first access."""
        return torch.from_numpy(self.frame.expand(self.cells))


@dataclass(frozen=True)
class Attributive:
    """Eq. (3) (plain) or eq. (4) (self-aware) for class ``class_id``: the prediction y*, or the class the
    request named in ExplainOptions.explained_class; ``probability`` is its h_c(x)."""

    class_id: int
    region: Region
    probability: float = 0.0


@dataclass(frozen=True)
class Insecurity:
    """One deliberative insecurity (r, a_1..a_V): eqs. (5)/(12), strength eq. (15)."""

    class_ids: tuple[int, ...]
    region: Region


@dataclass(frozen=True)
class ExemplarSide:
    """The counter side D(x^v, y^v, C'_v) of eq. (13) for counter class y^v, or why it is missing."""

    class_id: int
    exemplar_key: str | None
    region: Region | None  # None when no exemplar was available
    missing_reason: str = ""


@dataclass(frozen=True)
class Counterfactual:
    """Eqs. (7)/(13): the query-side map D(x, y*, C) and one exemplar side per counter class.

    strength: eq. (16) for one counter class, eq. (17) for several, averaged over the sides present.
    complete: True when every counter class had an exemplar.
    """

    predicted_id: int
    counter_ids: tuple[int, ...]
    query: Region
    exemplars: tuple[ExemplarSide, ...]
    strength: float
    complete: bool


@dataclass
class ImageResult:
    """Everything the engine says about one image, or the error that stopped it."""

    error: GaloreError | None = None
    width: int = 0
    height: int = 0
    top_classes: list[ClassScore] = field(default_factory=list)
    score_name: str = ""
    score: float = 0.0  # s(x) in [0, 1] for the requested score
    attributive: Attributive | None = None
    self_aware: Attributive | None = None
    deliberative: dict[int, list[Insecurity]] = field(default_factory=dict)  # V -> insecurities, strongest first
    counterfactual: Counterfactual | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
