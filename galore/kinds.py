"""Each explanation kind assembled from Table I, and the regions of a whole batch measured at once.

``plan`` turns one image's class maps into the combined maps of eq. (2) that its kinds need; ``measure_batch``
thresholds every map of every image of the batch together on the working grid and builds ImageResults, with
masks cut only for the regions returned (deliberation ranks many maps, returns few).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .combiner import TABLE_I, combine
from .exemplars import Features
from .masks import CellFrame
from .options import ExplainOptions, Kind
from .regions import Rule, WorkingGrid
from .results import Attributive, Counterfactual, ExemplarSide, ImageResult, Insecurity, Region
from .rows import CLIP_FLOOR, RowMaps

# An insecurity needs shared evidence (eq. 5: the region holds evidence for every class of the tuple). A V-tuple is
# returned only if (i) some feature cell has every class's map above the clip floor and a(1 - s) > 0, and (ii) its
# strength is at least this share of the image's strongest insecurity of the same V. Measured (EVALUATION.md,
# section 2b): on 7 skimage photos every top-5 pair and triple of the default model shares 23-49 of 49 cells and
# has a ratio >= 0.22; a product at the clip floor's scale has a ratio of ~1e-6.
SHARED_EVIDENCE_RATIO = 1e-3


@dataclass(frozen=True)
class Prediction:
    """The head's answer for one image: y*, class probabilities (C,), the counter classes and their exemplars."""

    predicted: int
    probs: torch.Tensor
    counters: tuple[int, ...]
    exemplar_keys: dict[int, str]  # counter class -> exemplar key (request or bank); absent: no exemplar
    explained: int  # the class attributive and self-aware explain: y* or ExplainOptions.explained_class

    def others(self, c: int) -> list[int]:
        """C'_v of eq. (13) for counter class c: the other counter classes and the prediction y*."""
        return [o for o in self.counters if o != c] + [self.predicted]


@dataclass(frozen=True)
class Plan:
    """One image's maps (h, w) to measure. ``single``: each thresholded on its own (attributive, self-aware, every
    V-tuple of the ambiguity set, the counterfactual query side), keyed by ``keys``; ``sides``: the counterfactual
    exemplar sides, thresholded to the query side's cell count, for the counter classes in ``side_classes``."""

    single: torch.Tensor  # (S, h, w)
    keys: list  # Kind.ATTRIBUTIVE | Kind.SELF_AWARE | Kind.COUNTERFACTUAL | (V, class tuple)
    sides: torch.Tensor  # (E, h, w)
    side_classes: list[int]
    side_feats: list[Features]
    shared: torch.Tensor | None = None  # (S,) bool per single map: False for a V-tuple sharing no evidence


def plan(opts: ExplainOptions, pred: Prediction, query: RowMaps, exemplars: dict[int, tuple[Features, RowMaps]]
         ) -> Plan:
    """Table I applied to one image (eqs. 3, 4, 5, 12, 13, 14)."""
    y, blocks, keys, shared = pred.predicted, [], [], []
    a_pred = query.of([y])[0]
    a_explained = query.of([pred.explained])[0]
    for kind in (Kind.ATTRIBUTIVE, Kind.SELF_AWARE):
        if kind in opts.kinds:
            blocks.append(combine(TABLE_I[kind], a_explained, None, query.score, query.inverse_score)[None])
            keys.append(kind)
            shared.append(a_pred.new_ones(1, dtype=torch.bool))
    if Kind.DELIBERATIVE in opts.kinds:
        candidates = torch.topk(pred.probs, opts.top_e).indices.tolist()
        for V in opts.dims:
            tuples = list(itertools.combinations(candidates, V))  # the ambiguity set A = (C choose V)
            classes = query.of(candidates)[torch.tensor([[candidates.index(c) for c in t] for t in tuples])]
            blocks.append(combine(TABLE_I[Kind.DELIBERATIVE], None, classes, query.score, query.inverse_score))
            keys += [(V, t) for t in tuples]  # (A, h, w), eqs. (5), (12)
            # (A,): some cell where every class of the tuple has evidence and the model is unsure (eq. 5)
            shared.append(((classes > CLIP_FLOOR).all(dim=-3) & (query.inverse_score > 0)).flatten(-2).any(-1))
    sides, side_classes, side_feats = [], [], []
    if Kind.COUNTERFACTUAL in opts.kinds:
        recipe = TABLE_I[Kind.COUNTERFACTUAL]
        blocks.append(combine(recipe, a_pred, query.of(pred.counters), query.score, None)[None])  # D(x, y*, C)
        keys.append(Kind.COUNTERFACTUAL)
        shared.append(a_pred.new_ones(1, dtype=torch.bool))
        for c in pred.counters:  # D(x^v, y^v, C'_v), eq. (13), in counter order
            if c in exemplars:
                feats, row = exemplars[c]
                sides.append(combine(recipe, row.of([c])[0], row.of(pred.others(c)), row.score, None))
                side_classes.append(c)
                side_feats.append(feats)
    h, w = a_pred.shape
    return Plan(torch.cat(blocks) if blocks else a_pred.new_zeros(0, h, w), keys,
                torch.stack(sides) if sides else a_pred.new_zeros(0, h, w), side_classes, side_feats,
                torch.cat(shared) if shared else a_pred.new_zeros(0, dtype=torch.bool))


def measure_batch(grid: WorkingGrid, items: list[tuple[ExplainOptions, Prediction, Plan, Features]],
                  labels: tuple[str, ...], results: list[ImageResult]) -> None:
    """Regions of every image of the batch, measured together; fills ``results`` (one per item)."""
    if not items:
        return
    singles = torch.cat([p.single for _, _, p, _ in items])
    sides = torch.cat([p.sides for _, _, p, _ in items])
    rules = _rules(grid, items)
    n_single = singles.shape[0]
    # pass 1: every single map by its own rule; the counterfactual sides only have their positive cells counted
    count_positive = torch.zeros(n_single + sides.shape[0], dtype=torch.bool)
    count_positive[n_single:] = True
    s0 = 0
    for o, _, p, _ in items:
        if Kind.COUNTERFACTUAL in o.kinds:
            count_positive[s0 + p.keys.index(Kind.COUNTERFACTUAL)] = True
        s0 += len(p.keys)
    first = grid.measure(torch.cat([singles, sides]), rules, count_positive)
    # counterfactual: every side keeps the same number of cells (equal size where the model looks, note under
    # eq. 16): the query's count, no more than any side with evidence has; a side without evidence keeps none
    side_k = torch.zeros(sides.shape[0], dtype=torch.long)
    query_k = {}
    s0, e0 = 0, n_single
    for o, _, p, _ in items:
        if Kind.COUNTERFACTUAL in o.kinds:
            q = s0 + p.keys.index(Kind.COUNTERFACTUAL)
            idx = [q] + list(range(e0, e0 + len(p.side_classes)))
            pos = first.positive[idx]
            count = min([int(first.wanted[q])] + [int(v) for v in pos if v > 0])
            k = torch.where(pos > 0, count, 0)
            query_k[q] = int(k[0])
            side_k[e0 - n_single:e0 - n_single + len(p.side_classes)] = k[1:]
        s0 += len(p.keys)
        e0 += len(p.side_classes)
    cf_rows = sorted(query_k)
    tau = first.tau[:n_single].clone()
    strength = first.strength[:n_single].clone()
    side_tau = side_strength = torch.zeros(0)
    if cf_rows:  # pass 2: the counterfactual sides at their common count
        second = grid.measure(torch.cat([singles[cf_rows], sides]),
                              Rule(torch.tensor([query_k[q] for q in cf_rows] + side_k.tolist(), dtype=torch.long),
                                   torch.zeros(len(cf_rows) + sides.shape[0])))
        tau[cf_rows], strength[cf_rows] = second.tau[:len(cf_rows)], second.strength[:len(cf_rows)]
        side_tau, side_strength = second.tau[len(cf_rows):], second.strength[len(cf_rows):]

    # choose the regions to return, then cut all their masks in one batch
    shared = torch.cat([p.shared if p.shared is not None else torch.ones(len(p.keys), dtype=torch.bool)
                        for _, _, p, _ in items]).to(strength.device)
    chosen: list[tuple[int, object]] = []  # (item, key) per returned single map, in ``wanted`` order
    wanted: list[int] = []
    s0 = 0
    for i, (o, _, p, _) in enumerate(items):
        for j, key in enumerate(p.keys):
            if not isinstance(key, tuple):
                chosen.append((i, key))
                wanted.append(s0 + j)
        for V in (o.dims if Kind.DELIBERATIVE in o.kinds else ()):
            idx = [j for j, key in enumerate(p.keys) if isinstance(key, tuple) and key[0] == V]
            rows = [s0 + j for j in idx]
            order = torch.sort(strength[rows], descending=True, stable=True).indices
            order = order[first.kept[rows][order] > 0]  # an insecurity left with no cell (absolute T) is dropped
            order = order[shared[rows][order]]  # classes without shared evidence (eq. 5) are no insecurity
            if len(order):  # at the clip floor's scale against the image's strongest of this V: noise
                order = order[strength[rows][order] >= SHARED_EVIDENCE_RATIO * strength[rows][order[0]]]
            for r in order[:o.max_insecurities].tolist():
                chosen.append((i, p.keys[idx[r]]))
                wanted.append(s0 + idx[r])
        s0 += len(p.keys)
    cells = grid.cell_masks(torch.cat([singles[wanted], sides]), torch.cat([tau[wanted], side_tau])).cpu().numpy()
    heat = torch.cat([singles[wanted], sides]).detach().float().cpu()
    strengths = torch.cat([strength[wanted], side_strength]).tolist()
    probabilities = torch.stack([pred.probs[pred.explained] for _, pred, _, _ in items]).tolist()  # one sync
    frames: dict[int, CellFrame] = {}
    cf_query: dict[int, Region] = {}

    def region(n: int, feats: Features) -> Region:
        frame = frames.get(id(feats))
        if frame is None:
            frame = frames[id(feats)] = grid.frame(feats.geo)
        return Region.of(cells[n], frame, heat[n], strengths[n])

    for n, (i, key) in enumerate(chosen):
        o, pred, _, feats = items[i]
        res = results[i]
        r = region(n, feats)
        if key is Kind.ATTRIBUTIVE:
            res.attributive = Attributive(pred.explained, r, probabilities[i])
        elif key is Kind.SELF_AWARE:
            res.self_aware = Attributive(pred.explained, r, probabilities[i])
        elif key is Kind.COUNTERFACTUAL:
            cf_query[i] = r  # the query side; the exemplar sides follow
        else:
            res.deliberative.setdefault(key[0], []).append(Insecurity(key[1], r))
    n = len(chosen)
    for i, (o, pred, p, _) in enumerate(items):
        if Kind.COUNTERFACTUAL not in o.kinds:
            continue
        side_regions = {}
        for c, feats in zip(p.side_classes, p.side_feats):
            side_regions[c] = region(n, feats)
            n += 1
        results[i].counterfactual = _counterfactual(pred, cf_query[i], side_regions, labels)


def _rules(grid: WorkingGrid, items) -> Rule:
    """The first pass's rule for every single map, then every side, in ``measure_batch``'s order. Scale groups of
    an absolute T (eqs. 6, 8, 9): the insecurities of one image and one V share one (pairs and triples are products
    of 2 and 3 maps: different units); the counterfactual query and its exemplar sides share one; attributive and
    self-aware maps each have their own."""
    k, absolute, groups = [], [], []
    side_k, side_absolute, side_groups = [], [], []
    next_group = 0
    for o, _, p, _ in items:
        rule = Rule.coverage_of(o.threshold, grid.cells)
        shared: dict[str, int] = {}

        def group(name: str | None) -> int:
            nonlocal next_group
            if name is None or name not in shared:
                next_group += 1
                if name is not None:
                    shared[name] = next_group - 1
                return next_group - 1
            return shared[name]

        for key in p.keys:
            k.append(rule.k)
            absolute.append(rule.absolute)
            groups.append(group(f"deliberative V={key[0]}" if isinstance(key, tuple) else
                                "counterfactual" if key is Kind.COUNTERFACTUAL else None))
        for _ in p.side_classes:  # pass 1 only counts a side's positive cells; its peak joins the query's scale
            side_k.append(torch.zeros(1, dtype=torch.long))
            side_absolute.append(torch.zeros(1))
            side_groups.append(group("counterfactual"))
    empty_long, empty = torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return Rule(torch.cat(k + side_k + [empty_long]), torch.cat(absolute + side_absolute + [empty]),
                torch.tensor(groups + side_groups, dtype=torch.long))


def _counterfactual(pred: Prediction, query: Region, sides: dict[int, Region], labels) -> Counterfactual:
    """Eqs. (13)-(14); strength eq. (16) / (17) averaged over the sides present."""
    exemplars = tuple(
        ExemplarSide(c, pred.exemplar_keys[c], sides[c]) if c in sides else
        ExemplarSide(c, None, None, f"no exemplar image for class {c} ({labels[c]!r}): send one with the "
                                    "request or add it to the model's exemplar bank")
        for c in pred.counters)
    present = [query] + list(sides.values())
    strength = sum(r.strength for r in present) / len(present)
    return Counterfactual(pred.predicted, pred.counters, query, exemplars, strength, len(sides) == len(pred.counters))
