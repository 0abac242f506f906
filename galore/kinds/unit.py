"""What every explanation kind is made of: its row of Table I, the classes it needs, the maps it asks the regions
stage to measure, and how it assembles its regions into a result. One ``KindUnit`` per kind (``galore.kinds.UNITS``);
the engine and the regions stage never ask which kind they hold.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..combiner import Recipe
from ..exemplars import Features
from ..options import ExplainOptions, Kind
from ..results import ImageResult, Region
from ..rows import RowMaps


@dataclass(frozen=True)
class Prediction:
    """The head's answer for one image: y*, class probabilities (C,) (on the host), the classes by decreasing
    probability (at least the top max(top_k, top_e, 2)), the counter classes and their exemplars."""

    predicted: int
    probs: torch.Tensor
    ranked: tuple[int, ...]
    counters: tuple[int, ...]
    exemplar_keys: dict[int, str]  # counter class -> exemplar key (request or bank); absent: no exemplar
    explained: int  # the class attributive and self-aware explain: y* or ExplainOptions.explained_class

    def others(self, c: int) -> list[int]:
        """C'_v of eq. (13) for counter class c: the other counter classes and the prediction y*."""
        return [o for o in self.counters if o != c] + [self.predicted]


@dataclass(frozen=True)
class Ranked:
    """Rows of a kind's maps that compete: at most ``most`` are returned, strongest first (eq. 15), and only those
    with a kept cell and shared evidence (``KindMaps.shared``) within SHARED_EVIDENCE_RATIO of the strongest."""

    rows: list[int]  # indices into the kind's maps
    most: int


@dataclass
class KindMaps:
    """What one kind asks the regions stage to measure for one image.

    maps (n, h, w): thresholded each by the image's rule (coverage or T), keyed by ``keys`` (the kind's own).
    shared (n,) bool: False for a map that must not be returned (an insecurity without shared evidence, eq. 5).
    scale (n,): the map's scale group for an absolute T (eqs. 6, 8, 9): maps of one image and one kind with the same
        name share one scale; None: a scale of its own.
    ranked: groups of competing rows (deliberation); a row in no group is always returned.
    sides (E, h, w): maps paired with row ``paired`` (the counterfactual's exemplar sides, eq. 13): every side and
        that row keep the same number of cells, and share its scale; ``side_keys`` and ``side_feats`` name each
        side and the features it is cut on.
    """

    maps: torch.Tensor
    keys: list
    shared: torch.Tensor
    scale: list[str | None]
    ranked: list[Ranked] = field(default_factory=list)
    sides: torch.Tensor | None = None
    paired: int | None = None
    side_keys: list = field(default_factory=list)
    side_feats: list[Features] = field(default_factory=list)

    @property
    def n_sides(self) -> int:
        return 0 if self.sides is None else self.sides.shape[0]


class KindUnit(ABC):
    """One explanation kind. Subclasses set ``kind`` and ``recipe`` (its row of Table I) and implement ``maps`` and
    ``assemble``; the other hooks default to "needs nothing more".

    The path of one image: ``validate`` (before any compute), ``counters`` and ``classes`` (after the prediction:
    which class maps the attribution stage computes), ``maps`` (eq. 2 applied), then, after the whole batch's
    regions are measured, ``assemble`` with the regions of the rows returned.
    """

    kind: Kind
    recipe: Recipe

    def validate(self, opts: ExplainOptions, num_classes: int) -> None:
        """Model-dependent checks of the kind's options; raises a GaloreError naming the field."""

    def counters(self, opts: ExplainOptions, ranked: tuple[int, ...], labels: tuple[str, ...]) -> tuple[int, ...]:
        """Counter classes whose exemplars this kind explains against (they get exemplar images and rows)."""
        return ()

    def classes(self, opts: ExplainOptions, ranked: tuple[int, ...], counters: tuple[int, ...]) -> list[int]:
        """Classes whose maps the query image needs beyond y* and the explained class."""
        return []

    @abstractmethod
    def maps(self, opts: ExplainOptions, pred: Prediction, query: RowMaps,
             exemplars: dict[int, tuple[Features, RowMaps]]) -> KindMaps:
        """Eq. (2) with the kind's recipe on the image's class maps (and its exemplars' rows)."""

    @abstractmethod
    def assemble(self, result: ImageResult, pred: Prediction, regions: list[tuple[object, Region]],
                 sides: list[tuple[object, Region]], labels: tuple[str, ...]) -> None:
        """Store the kind's result in ``result``: ``regions`` are (key, region) of the rows returned, ranked rows
        strongest first; ``sides`` the (side key, region) of every side."""
