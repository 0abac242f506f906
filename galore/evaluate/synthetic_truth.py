"""The synthetic benchmark's ground truth by construction against the proxy protocol's (GALORE TPAMI 2023 §VI-B,
§VII-A), and the classifier's confusions against the generator's families.

The protocol derives its ground truth from attribute annotations: a (part, class V-tuple) triplet is an insecurity
when it is among the ``fraction`` (20 %) most similar (``proxy.GroundTruth``). The generator knows which parts
the classes share (``synthetic.Design.shared_parts``). ``protocol_agreement`` counts how often the cut selects
exactly those: precision = |cut ∩ shared| / |cut|, recall = |cut ∩ shared| / |shared|, over every part and every
V-tuple of classes. ``ConstructionTruth`` puts the generator's ground truth in the protocol's form, so every
region (GALORE's and the baselines') can be scored against it directly instead of against the 20 % cut.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from galore.errors import InvalidArgument

from .cub import Cub
from .proxy import DEFAULT_FRACTION, PART_MAPPINGS, GroundTruth
from .synthetic import PART_NAMES, Design


def protocol_agreement(cub: Cub, d: Design, dims: Sequence[int] = (2, 3), fraction: float = DEFAULT_FRACTION,
                       part_mapping: str = "authors") -> dict[int, dict[str, float | int]]:
    """Per V: triplets (parts x V-tuples), shared by construction, selected by the protocol's cut, both, and
    precision / recall of the cut against construction; also per part (``parts``: part -> [precision, recall])."""
    if tuple(cub.parts) != PART_NAMES:
        raise InvalidArgument("data", f"the dataset's parts {cub.parts} are not the generator's {PART_NAMES}")
    gt = GroundTruth.of(cub, fraction, mapping=PART_MAPPINGS[part_mapping])
    out = {}
    for v in dims:
        tuples = list(combinations(range(d.num_classes), v))
        shared = np.array([d.shared_parts(t) for t in tuples])  # (T, K)
        selected = np.array([gt.insecure_parts(t) for t in tuples])  # (T, K)
        both = shared & selected
        per_part = {p: [_ratio(both[:, k].sum(), selected[:, k].sum()), _ratio(both[:, k].sum(), shared[:, k].sum())]
                    for k, p in enumerate(PART_NAMES)}
        out[v] = {"triplets": int(shared.size), "shared": int(shared.sum()), "selected": int(selected.sum()),
                  "both": int(both.sum()), "precision": _ratio(both.sum(), selected.sum()),
                  "recall": _ratio(both.sum(), shared.sum()), "parts": per_part}
    return out


class ConstructionTruth(GroundTruth):
    """The generator's ground truth as a ``proxy.GroundTruth``: alpha_k(a, b) = 1 when classes a and b share part
    k by construction (``Design.shared_parts``), else 0, every part described, and the cut 1 for every V. So
    ``insecure_parts(t)`` = the parts every class of t shares, ``discriminant_parts(a, others)`` = the parts in
    which a differs from every other class (for a pair: ``ground_truth.json``'s "shared" and "differ")."""

    def __init__(self, d: Design):
        k, c = len(PART_NAMES), d.num_classes
        alpha = np.zeros((k, c, c))
        for a, b in combinations(range(c), 2):
            alpha[:, a, b] = alpha[:, b, a] = d.shared_parts((a, b))
        super().__init__(alpha, np.ones(k, bool))

    def cut(self, v: int) -> float:
        if not 2 <= v <= self.num_classes:
            raise InvalidArgument("dims", f"V={v} needs 2 <= V <= {self.num_classes} classes")
        return 1.0


def family_confusion(confusion: Sequence[Sequence[int]], families: Sequence[Sequence[int]]) -> dict[str, float]:
    """Of the held-out errors (off-diagonal of ``confusion``, rows true class), the share whose predicted class is
    in the true class's family; and that share if errors were spread evenly over the other classes (chance)."""
    m = np.asarray(confusion, float)
    c = len(m)
    same = np.zeros((c, c), bool)
    for f in families:
        same[np.ix_(f, f)] = True
    np.fill_diagonal(same, False)
    errors = m.sum() - np.trace(m)
    chance = float(np.mean([(len(f) - 1) / (c - 1) for f in families for _ in f]))
    return {"errors": int(errors), "within_family": _ratio(m[same].sum(), errors), "chance": chance}


def _ratio(a, b) -> float | None:
    return float(a) / float(b) if b else None


def summary_rows(agreement: Mapping[int, Mapping]) -> list[str]:
    """Markdown rows of ``protocol_agreement``: V, triplets, shared, selected, precision, recall."""
    rows = ["| V | (part, tuple) triplets | shared by construction | selected by the 20 % cut | precision of the cut "
            "| recall of the cut |", "|---|---|---|---|---|---|"]
    for v, a in agreement.items():
        rows.append(f"| {v} | {a['triplets']} | {a['shared']} | {a['selected']} | {_fmt(a['precision'])} | "
                    f"{_fmt(a['recall'])} |")
    return rows


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
