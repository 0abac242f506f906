"""Deliberative explanations (eqs. 5, 12): for every V-tuple of the top-E classes (the ambiguity set, Table I), the
region where all V classes have evidence and the model is unsure; the strongest few per V are returned (eq. 15)."""
from __future__ import annotations

import itertools
import math

import torch

from ..combiner import Beta, Gamma, Recipe, combine
from ..device import to_device
from ..errors import ResourceExhausted
from ..options import Kind
from ..results import Insecurity
from ..rows import CLIP_FLOOR
from .unit import KindMaps, KindUnit, Ranked

MAX_AMBIGUITIES = 1000  # candidate V-tuples per image (sum over V of C(E, V)); each is one working-grid map


class DeliberativeUnit(KindUnit):
    kind = Kind.DELIBERATIVE
    recipe = Recipe(alpha=False, beta=Beta.IDENTITY, gamma=Gamma.INVERSE_SCORE)  # eqs. (5), (12)

    def validate(self, opts, num_classes) -> None:
        ambiguities = sum(math.comb(opts.top_e, V) for V in set(opts.dims))
        if ambiguities > MAX_AMBIGUITIES:
            raise ResourceExhausted("options.top_e", f"E={opts.top_e} with V in {sorted(set(opts.dims))} gives "
                                                     f"{ambiguities} ambiguity maps, limit {MAX_AMBIGUITIES}")

    def classes(self, opts, ranked, counters) -> list[int]:
        return list(ranked[:opts.top_e])

    def maps(self, opts, pred, query, exemplars) -> KindMaps:
        candidates = list(pred.ranked[:opts.top_e])  # the prediction's ranking: no second top-E
        blocks, keys, shared, ranked = [], [], [], []
        for V in opts.dims:
            tuples = list(itertools.combinations(candidates, V))  # the ambiguity set A = (C choose V)
            index = to_device([[candidates.index(c) for c in t] for t in tuples], query.maps.device, torch.long)
            classes = query.of(candidates)[index]  # (A, V, h, w)
            blocks.append(combine(self.recipe, None, classes, query.score, query.inverse_score))  # (A, h, w)
            ranked.append(Ranked(list(range(len(keys), len(keys) + len(tuples))), opts.max_insecurities))
            keys += [(V, t) for t in tuples]
            # (A,): some cell where every class of the tuple has evidence and the model is unsure (eq. 5)
            shared.append(((classes > CLIP_FLOOR).all(dim=-3) & (query.inverse_score > 0)).flatten(-2).any(-1))
        scale = [f"V={V}" for V, _ in keys]  # pairs and triples are products of 2 and 3 maps: different units
        return KindMaps(torch.cat(blocks), keys, torch.cat(shared), scale, ranked)

    def assemble(self, result, pred, regions, sides, labels) -> None:
        for (V, classes), region in regions:
            result.deliberative.setdefault(V, []).append(Insecurity(classes, region))


DELIBERATIVE = DeliberativeUnit()
