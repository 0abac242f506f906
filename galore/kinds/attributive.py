"""Attributive (eq. 3) and self-aware attributive (eq. 4) explanations: one map of the explained class, alone or
weighted by the confidence map a(s)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..combiner import Beta, Gamma, Recipe, combine
from ..options import Kind
from ..results import Attributive
from .unit import KindMaps, KindUnit


@dataclass(frozen=True)
class AttributiveUnit(KindUnit):
    """The explained class's map (y* or ``explained_class``), stored in ``ImageResult.<kind.value>``."""

    kind: Kind
    recipe: Recipe

    def maps(self, opts, pred, query, exemplars) -> KindMaps:
        a = query.of([pred.explained])  # (1, h, w)
        heat = combine(self.recipe, a[0], None, query.score, query.inverse_score)[None]  # (1, h, w)
        return KindMaps(heat, [self.kind], heat.new_ones(1, dtype=torch.bool), [None])

    def assemble(self, result, pred, regions, sides, labels) -> None:
        for _, region in regions:
            setattr(result, self.kind.value, Attributive(pred.explained, region, float(pred.probs[pred.explained])))


ATTRIBUTIVE = AttributiveUnit(Kind.ATTRIBUTIVE, Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.ONE))  # eq. (3)
SELF_AWARE = AttributiveUnit(Kind.SELF_AWARE, Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.SCORE))  # eq. (4)
