"""Counterfactual explanations (eqs. 11, 13, 14): the region of the query image that is evidence for y* and not
for the counter classes, and, for each counter class, the region of its exemplar image that is evidence for it and
not for the others; every side keeps the same number of cells (note under eq. 16), strength eqs. (16)/(17)."""
from __future__ import annotations

import torch

from ..combiner import Beta, Gamma, Recipe, combine
from ..errors import InvalidArgument
from ..options import Kind
from ..results import Counterfactual, ExemplarSide
from .unit import KindMaps, KindUnit


class CounterfactualUnit(KindUnit):
    kind = Kind.COUNTERFACTUAL
    recipe = Recipe(alpha=True, beta=Beta.COMPLEMENT, gamma=Gamma.SCORE)  # eqs. (11), (14)

    def validate(self, opts, num_classes) -> None:
        if num_classes < 2:
            raise InvalidArgument("options.counter_classes", "a counterfactual needs a model with 2+ classes")

    def counters(self, opts, ranked, labels) -> tuple[int, ...]:
        counters = opts.counter_classes or (ranked[1],)  # default: the runner-up
        if ranked[0] in counters:
            raise InvalidArgument("options.counter_classes", f"class {ranked[0]} ({labels[ranked[0]]!r}) is the "
                                                             "prediction itself")
        return tuple(counters)

    def classes(self, opts, ranked, counters) -> list[int]:
        return list(counters)

    def maps(self, opts, pred, query, exemplars) -> KindMaps:
        heat = combine(self.recipe, query.of([pred.predicted])[0], query.of(pred.counters), query.score, None)
        sides, side_keys, side_feats = [], [], []
        for c in pred.counters:  # D(x^v, y^v, C'_v), eq. (13), in counter order
            if c in exemplars:
                feats, row = exemplars[c]
                sides.append(combine(self.recipe, row.of([c])[0], row.of(pred.others(c)), row.score, None))
                side_keys.append(c)
                side_feats.append(feats)
        return KindMaps(heat[None], [self.kind], heat.new_ones(1, dtype=torch.bool), ["query and sides"],
                        sides=torch.stack(sides) if sides else heat.new_zeros((0, *heat.shape)), paired=0,
                        side_keys=side_keys, side_feats=side_feats)

    def assemble(self, result, pred, regions, sides, labels) -> None:
        """Eqs. (13)-(14); strength eq. (16) / (17) averaged over the sides present."""
        (_, query), = regions
        found = dict(sides)
        exemplars = tuple(
            ExemplarSide(c, pred.exemplar_keys[c], found[c]) if c in found else
            ExemplarSide(c, None, None, f"no exemplar image for class {c} ({labels[c]!r}): send one with the "
                                        "request or add it to the model's exemplar bank")
            for c in pred.counters)
        present = [query] + list(found.values())
        strength = sum(r.strength for r in present) / len(present)
        result.counterfactual = Counterfactual(pred.predicted, pred.counters, query, exemplars, strength,
                                               len(found) == len(pred.counters))


COUNTERFACTUAL = CounterfactualUnit()
