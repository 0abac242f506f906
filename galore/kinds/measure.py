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
from .device import host_side, to_device, to_host
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
class Plan:
    """One image's maps (h, w) to measure. ``single``: each thresholded on its own (attributive, self-aware, every
    V-tuple of the ambiguity set, the counterfactual query side), keyed by ``keys``; ``sides``: the counterfactual
    exemplar sides, thresholded to the query side's cell count, for the counter classes in ``side_classes``."""

    single: torch.Tensor  # (S, h, w)
    keys: list  # Kind.ATTRIBUTIVE | Kind.SELF_AWARE | Kind.COUNTERFACTUAL | (V, class tuple)
    sides: torch.Tensor  # (E, h, w)
    side_classes: list[int]
    side_feats: list[Features]
    shared: torch.Tensor  # (S,) bool per single map: False for a V-tuple sharing no evidence


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
        candidates = list(pred.ranked[:opts.top_e])  # the prediction's ranking: no second top-E
        for V in opts.dims:
            tuples = list(itertools.combinations(candidates, V))  # the ambiguity set A = (C choose V)
            index = to_device([[candidates.index(c) for c in t] for t in tuples], a_pred.device, torch.long)
            classes = query.of(candidates)[index]  # (A, V, h, w)
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
    """Regions of every image of the batch, measured together; fills ``results`` (one per item). Everything up to
    the masks stays on the maps' device, and off the CPU reads no device value on the host (the working grid's
    sync-free path); the masks, maps and strengths of the regions returned then come to the host in ONE copy."""
    if not items:
        return
    singles = torch.cat([p.single for _, _, p, _ in items])  # (S, h, w)
    sides = torch.cat([p.sides for _, _, p, _ in items])  # (E, h, w)
    device, n_single = singles.device, singles.shape[0]
    # host bookkeeping: each counterfactual's query row, which counterfactual each exemplar side belongs to, and a
    # bound on the query's cell count (its coverage; all cells for an absolute T)
    cf_rows, side_owner, cf_bound = [], [], []
    s0 = 0
    for o, _, p, _ in items:
        if Kind.COUNTERFACTUAL in o.kinds:
            cf_rows.append(s0 + p.keys.index(Kind.COUNTERFACTUAL))
            side_owner += [len(cf_rows) - 1] * len(p.side_classes)
            wanted = Rule.cells_wanted(o.threshold, grid.cells)
            cf_bound.append(grid.cells if wanted is None else wanted)
        s0 += len(p.keys)
    # pass 1: every single map by its own rule; the counterfactual sides only have their positive cells counted
    count_positive = to_device([False] * n_single + [True] * sides.shape[0], device, torch.bool)
    first = grid.measure(torch.cat([singles, sides]), _rules(grid, items, device),
                         count_positive.index_fill(0, to_device(cf_rows, device, torch.long), True))
    tau = first.tau[:n_single].clone()
    strength = first.strength[:n_single].clone()
    side_tau = side_strength = first.tau.new_zeros(0)
    if cf_rows:  # pass 2: the counterfactual sides at their common count
        q = to_device(cf_rows, device, torch.long)
        query_k, side_k = _common_counts(first.wanted[q], first.positive[q], first.positive[n_single:],
                                         to_device(side_owner, device, torch.long))
        second = grid.measure(torch.cat([singles[q], sides]),
                              Rule(torch.cat([query_k, side_k]), tau.new_zeros(len(cf_rows) + sides.shape[0]),
                                   k_max=max(cf_bound), any_absolute=False))
        tau[q], strength[q] = second.tau[:len(cf_rows)], second.strength[:len(cf_rows)]
        side_tau, side_strength = second.tau[len(cf_rows):], second.strength[len(cf_rows):]

    # the regions to return: every non-deliberative map, and per image and V the strongest insecurities that have a
    # cell and shared evidence (eq. 5), at least SHARED_EVIDENCE_RATIO of the strongest such one
    fixed: list[tuple[int, object, int]] = []  # (item, key, row of singles)
    segments: list[tuple[int, int, list[int], int]] = []  # (item, V, rows of its ambiguity set, most returned)
    key_of: dict[int, object] = {}
    s0 = 0
    for i, (o, _, p, _) in enumerate(items):
        for j, key in enumerate(p.keys):
            key_of[s0 + j] = key
            if not isinstance(key, tuple):
                fixed.append((i, key, s0 + j))
        for V in (o.dims if Kind.DELIBERATIVE in o.kinds else ()):
            rows = [s0 + j for j, key in enumerate(p.keys) if isinstance(key, tuple) and key[0] == V]
            segments.append((i, V, rows, o.max_insecurities))
        s0 += len(p.keys)
    shared = torch.cat([p.shared for _, _, p, _ in items])  # (S,)
    usable = _shared_enough(strength, (first.kept[:n_single] > 0) & shared, [rows for _, _, rows, _ in segments],
                            device)
    candidates, alive = _strongest(strength, usable, [(rows, most) for _, _, rows, most in segments], device)
    chosen = torch.cat([to_device([r for _, _, r in fixed], device, torch.long), candidates])
    heat = torch.cat([singles[chosen], sides])  # (R, h, w)
    cells, heat, strengths, candidates, alive = to_host([
        grid.cell_masks(heat, torch.cat([tau[chosen], side_tau])), heat.detach().float(),
        torch.cat([strength[chosen], side_strength]), candidates, alive])  # the batch's one copy to the host

    with host_side():
        cells, strengths = cells.numpy(), strengths.tolist()
        candidates, alive = candidates.tolist(), alive.tolist()
        probabilities = [float(pred.probs[pred.explained]) for _, pred, _, _ in items]
    frames: dict[int, CellFrame] = {}
    cf_query: dict[int, Region] = {}

    def region(n: int, feats: Features) -> Region:
        frame = frames.get(id(feats))
        if frame is None:
            frame = frames[id(feats)] = grid.frame(feats.geo)
        return Region.of(cells[n], frame, heat[n], strengths[n])

    owners = [i for i, _, rows, most in segments for _ in range(min(most, len(rows)))]
    picked = [(i, key, n) for n, (i, key, _) in enumerate(fixed)] + [
        (i, key_of[row], len(fixed) + c) for c, (i, row, ok) in enumerate(zip(owners, candidates, alive)) if ok]
    for i, key, n in picked:
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
    n = len(fixed) + len(candidates)
    for i, (o, pred, p, _) in enumerate(items):
        if Kind.COUNTERFACTUAL not in o.kinds:
            continue
        side_regions = {}
        for c, feats in zip(p.side_classes, p.side_feats):
            side_regions[c] = region(n, feats)
            n += 1
        results[i].counterfactual = _counterfactual(pred, cf_query[i], side_regions, labels)


def _common_counts(query_wanted: torch.Tensor, query_positive: torch.Tensor, side_positive: torch.Tensor,
                   owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactual: every side keeps the same number of cells (equal size where the model looks, note under
    eq. 16): the query's count, no more than any side with evidence has; a side without evidence keeps none.
    query_wanted, query_positive (Q,) per counterfactual; side_positive (E,) per exemplar side, ``owner`` (E,) its
    counterfactual -> cells to keep (Q,), (E,). On tensors: no host read.

    Example:
        >>> _common_counts(torch.tensor([10, 10]), torch.tensor([30, 0]), torch.tensor([4, 0, 50]),
        ...                torch.tensor([0, 0, 1]))
        (tensor([4, 0]), tensor([ 4,  0, 10]))
    """
    none = torch.iinfo(query_wanted.dtype).max
    count = torch.minimum(query_wanted, torch.where(query_positive > 0, query_positive, none))  # (Q,)
    count = count.scatter_reduce(0, owner, torch.where(side_positive > 0, side_positive, none), "amin")
    return torch.where(query_positive > 0, count, 0), torch.where(side_positive > 0, count[owner], 0)


def _shared_enough(strength: torch.Tensor, usable: torch.Tensor, segments: list[list[int]],
                   device: torch.device) -> torch.Tensor:
    """``usable`` (S,) bool, narrowed in each segment (rows of ``strength`` (S,)) to the rows whose strength is at
    least SHARED_EVIDENCE_RATIO of the segment's strongest usable row: weaker ones are products at the clip floor's
    scale, not an ambiguity the model has. On the device, without a host read.

    Example:
        >>> _shared_enough(torch.tensor([1e-9, 3., 2., 5., 9.]), torch.tensor([True, True, True, True, False]),
        ...                [[0, 1, 2], [3, 4]], torch.device("cpu"))
        tensor([False,  True,  True,  True, False])
    """
    rows = to_device([r for seg in segments for r in seg], device, torch.long)  # (R,)
    segment = to_device([g for g, seg in enumerate(segments) for _ in seg], device, torch.long)  # (R,)
    candidate = torch.where(usable[rows], strength[rows], -torch.inf)
    top = torch.full((len(segments),), -torch.inf, device=device, dtype=strength.dtype)
    top = top.scatter_reduce(0, segment, candidate, "amax")  # (G,) each segment's strongest usable
    narrowed = usable.clone()
    narrowed[rows] = usable[rows] & (strength[rows] >= SHARED_EVIDENCE_RATIO * top[segment])
    return narrowed


def _strongest(strength: torch.Tensor, usable: torch.Tensor, segments: list[tuple[list[int], int]],
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each segment (rows of ``strength`` (S,), the most to return): its min(most, len(rows)) rows by
    decreasing strength (ties: row order), the ``usable`` (S,) ones first (an insecurity left with no cell, absolute
    T, or without shared evidence is dropped by the caller). Segments in order, on the device, without a host read:
    rows (K,), usable (K,).

    Example:
        >>> usable = torch.tensor([True, False, True, True, True])
        >>> _strongest(torch.tensor([1., 3., 2., 5., 4.]), usable, [([0, 1, 2], 2), ([3, 4], 5)], torch.device("cpu"))
        (tensor([2, 0, 3, 4]), tensor([True, True, True, True]))
    """
    rows = to_device([r for seg, _ in segments for r in seg], device, torch.long)  # (R,)
    segment = to_device([g for g, (seg, _) in enumerate(segments) for _ in seg], device, torch.long)  # (R,)
    empty = ~usable[rows]
    order = torch.sort(strength[rows], descending=True, stable=True).indices  # stable sorts, last key first
    order = order[torch.sort(empty[order].to(torch.uint8), stable=True).indices]
    order = order[torch.sort(segment[order], stable=True).indices]  # each segment keeps its place
    starts = [0]
    for seg, _ in segments:
        starts.append(starts[-1] + len(seg))
    positions = to_device([starts[g] + j for g, (seg, most) in enumerate(segments) for j in range(min(most, len(seg)))],
                          device, torch.long)
    pick = order[positions]
    return rows[pick], ~empty[pick]


def _rules(grid: WorkingGrid, items, device: torch.device) -> Rule:
    """The first pass's rule for every single map, then every side, in ``measure_batch``'s order, on ``device``.
    Scale groups of an absolute T (eqs. 6, 8, 9): the insecurities of one image and one V share one (pairs and
    triples are products of 2 and 3 maps: different units); the counterfactual query and its exemplar sides share
    one; attributive and self-aware maps each have their own."""
    k, absolute, groups = [], [], []
    side_k, side_absolute, side_groups = [], [], []
    next_group = 0
    for o, _, p, _ in items:
        wanted = Rule.cells_wanted(o.threshold, grid.cells)
        rule_k, rule_t = (-1, float(o.threshold.absolute)) if wanted is None else (wanted, 0.0)
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
            k.append(rule_k)
            absolute.append(rule_t)
            groups.append(group(f"deliberative V={key[0]}" if isinstance(key, tuple) else
                                "counterfactual" if key is Kind.COUNTERFACTUAL else None))
        for _ in p.side_classes:  # pass 1 only counts a side's positive cells; its peak joins the query's scale
            side_k.append(0)
            side_absolute.append(0.0)
            side_groups.append(group("counterfactual"))
    return Rule(to_device(k + side_k, device, torch.long), to_device(absolute + side_absolute, device, torch.float32),
                to_device(groups + side_groups, device, torch.long), k_max=max(k + side_k, default=0),
                any_absolute=any(v < 0 for v in k))


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
