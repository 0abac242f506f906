"""The regions of every map of every image of a batch, measured at once on the working grid.

Each kind's unit (``galore.kinds.UNITS``) says what to measure (``KindMaps``); ``measure_batch`` thresholds every
map of the batch together, pairs each paired row with its sides at a common cell count (two passes), picks the
strongest competing rows, cuts masks only for the regions returned (deliberation ranks many maps, returns few),
and hands each unit its regions to assemble.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..device import host_side, to_device, to_host
from ..exemplars import Features
from ..masks import CellFrame
from ..options import ExplainOptions
from ..regions import Rule, WorkingGrid
from ..results import ImageResult, Region
from .unit import KindMaps, KindUnit, Prediction

# An insecurity needs shared evidence (eq. 5: the region holds evidence for every class of the tuple). A ranked row
# is returned only if (i) its map has some kept cell and its ``KindMaps.shared`` flag (deliberative: some feature
# cell has every class's map above the clip floor and a(1 - s) > 0), and (ii) its strength is at least this share of
# the strongest such row of its group. Measured (EVALUATION.md, section 2b): on 7 skimage photos every top-5 pair
# and triple of the default model shares 23-49 of 49 cells and has a ratio >= 0.22; a product at the clip floor's
# scale has a ratio of ~1e-6.
SHARED_EVIDENCE_RATIO = 1e-3


@dataclass(frozen=True)
class Plan:
    """One image's maps to measure: each unit of its kinds with the maps it asked for, in ``UNITS`` order."""

    parts: list[tuple[KindUnit, KindMaps]]


@dataclass(frozen=True)
class _Block:
    """Where one (image, unit) part lies in the batch's concatenated maps: singles [s0, s0 + n), sides [e0, e0 + E)."""

    item: int
    unit: KindUnit
    maps: KindMaps
    s0: int
    e0: int


def measure_batch(grid: WorkingGrid, items: list[tuple[ExplainOptions, Prediction, Plan, Features]],
                  labels: tuple[str, ...], results: list[ImageResult]) -> None:
    """Regions of every image of the batch, measured together; fills ``results`` (one per item). Off the CPU the
    batch's maps cross to the host in ONE copy: where ``grid.measures_on_host`` (few maps, the C kernel built),
    the coarse maps, before measuring on the host; else everything up to the masks stays on the device without
    reading a device value (the working grid's sync-free path), and the regions' masks, maps and strengths come
    over at the end."""
    blocks, s0, e0 = [], 0, 0
    for i, (_, _, p, _) in enumerate(items):
        for unit, m in p.parts:
            blocks.append(_Block(i, unit, m, s0, e0))
            s0, e0 = s0 + len(m.keys), e0 + m.n_sides
    if not blocks:
        return
    singles = torch.cat([b.maps.maps for b in blocks])  # (S, h, w)
    sides = torch.cat([b.maps.sides for b in blocks if b.maps.n_sides] or [singles.new_zeros((0, *singles.shape[1:]))])  # (E, h, w)
    shared = torch.cat([b.maps.shared for b in blocks])  # (S,)
    if grid.measures_on_host(singles.device, singles.shape[0] + sides.shape[0]):
        singles, sides, shared = to_host([singles.float(), sides.float(), shared])  # the batch's one copy
        with host_side():
            _measure_maps(grid, items, labels, results, blocks, singles, sides, shared, copied=True)
    else:
        _measure_maps(grid, items, labels, results, blocks, singles, sides, shared, copied=False)


def _measure_maps(grid: WorkingGrid, items, labels: tuple[str, ...], results: list[ImageResult],
                  blocks: list[_Block], singles: torch.Tensor, sides: torch.Tensor, shared: torch.Tensor,
                  copied: bool) -> None:
    """``measure_batch`` for its maps: singles (S, h, w), sides (E, h, w), shared (S,), all on one device;
    ``copied``: they are the host copies of device maps (the returned values need no copy of their own)."""
    device, n_single = singles.device, singles.shape[0]
    # host bookkeeping: each paired row, the pair each side belongs to, and a bound on the paired row's cell count
    # (its coverage; all cells for an absolute T)
    paired_rows, side_owner, paired_bound = [], [], []
    for b in blocks:
        if b.maps.paired is not None:
            paired_rows.append(b.s0 + b.maps.paired)
            side_owner += [len(paired_rows) - 1] * b.maps.n_sides
            wanted = Rule.cells_wanted(items[b.item][0].threshold, grid.cells)
            paired_bound.append(grid.cells if wanted is None else wanted)
    # pass 1: every single map by its own rule; the sides only have their positive cells counted
    count_positive = to_device([False] * n_single + [True] * sides.shape[0], device, torch.bool)
    first = grid.measure(torch.cat([singles, sides]), _rules(grid, items, blocks, device),
                         count_positive.index_fill(0, to_device(paired_rows, device, torch.long), True))
    tau = first.tau[:n_single].clone()
    strength = first.strength[:n_single].clone()
    side_tau = side_strength = first.tau.new_zeros(0)
    if paired_rows:  # pass 2: the paired rows and their sides at their common count
        q = to_device(paired_rows, device, torch.long)
        query_k, side_k = _common_counts(first.wanted[q], first.positive[q], first.positive[n_single:],
                                         to_device(side_owner, device, torch.long))
        second = grid.measure(torch.cat([singles[q], sides]),
                              Rule(torch.cat([query_k, side_k]), tau.new_zeros(len(paired_rows) + sides.shape[0]),
                                   k_max=max(paired_bound), any_absolute=False))
        tau[q], strength[q] = second.tau[:len(paired_rows)], second.strength[:len(paired_rows)]
        side_tau, side_strength = second.tau[len(paired_rows):], second.strength[len(paired_rows):]

    # the rows to return: every row in no ranked group, and per group the strongest that have a kept cell and
    # shared evidence (eq. 5), at least SHARED_EVIDENCE_RATIO of the strongest such one
    fixed = [b.s0 + j for b in blocks for j in _unranked(b.maps)]
    segments = [([b.s0 + r for r in g.rows], g.most) for b in blocks for g in b.maps.ranked]
    usable = _shared_enough(strength, (first.kept[:n_single] > 0) & shared, [rows for rows, _ in segments], device)
    candidates, alive = _strongest(strength, usable, segments, device)
    chosen = torch.cat([to_device(fixed, device, torch.long), candidates])
    heat = torch.cat([singles[chosen], sides])  # (R, h, w)
    returned_values = [grid.cell_masks(heat, torch.cat([tau[chosen], side_tau])), heat.detach().float(),
                       torch.cat([strength[chosen], side_strength]), candidates, alive]
    if not copied:  # the batch's one copy to the host
        returned_values = to_host(returned_values)
    cells, heat, strengths, candidates, alive = returned_values  # detached: to_host's, or made from its copies

    with host_side():
        cells, strengths = cells.numpy(), strengths.tolist()
        candidates, alive = candidates.tolist(), alive.tolist()
    frames: dict[int, CellFrame] = {}
    summaries: dict[int, tuple[int, tuple | None]] = {}  # row of ``cells`` -> (pixel count, bbox)

    def frame_of(feats: Features) -> CellFrame:
        frame = frames.get(id(feats))
        if frame is None:
            frame = frames[id(feats)] = grid.frame(feats.geo)
        return frame

    def region(n: int, feats: Features) -> Region:
        return Region(cells[n], frame_of(feats), heat[n], strengths[n], *summaries[n])

    # the returned rows in the order each unit reads them: unranked rows, then each group strongest first
    returned: dict[int, list[tuple[object, int]]] = {id(b): [] for b in blocks}  # block -> (key, row of ``heat``)
    owner = {b.s0 + j: b for b in blocks for j in range(len(b.maps.keys))}
    for n, row in enumerate(fixed):
        returned[id(owner[row])].append((owner[row].maps.keys[row - owner[row].s0], n))
    for c, (row, ok) in enumerate(zip(candidates, alive)):
        if ok:
            returned[id(owner[row])].append((owner[row].maps.keys[row - owner[row].s0], len(fixed) + c))
    n_side = len(fixed) + len(candidates)
    with host_side():  # from here on every value is a host copy (the predictions' probabilities included)
        rows_of: dict[int, tuple[Features, list[int]]] = {}  # image -> its returned rows: one batched call each
        for b in blocks:
            feats = items[b.item][3]
            rows_of.setdefault(id(feats), (feats, []))[1].extend(n for _, n in returned[id(b)])
            for j, f in enumerate(b.maps.side_feats):
                rows_of.setdefault(id(f), (f, []))[1].append(n_side + b.e0 + j)
        for feats, rows in rows_of.values():
            summaries.update(zip(rows, zip(*frame_of(feats).summaries(cells[rows]))))
        for b in blocks:
            _, pred, _, feats = items[b.item]
            regions = [(key, region(n, feats)) for key, n in returned[id(b)]]
            side_regions = [(key, region(n_side + b.e0 + j, f))
                            for j, (key, f) in enumerate(zip(b.maps.side_keys, b.maps.side_feats))]
            b.unit.assemble(results[b.item], pred, regions, side_regions, labels)


def _unranked(m: KindMaps) -> list[int]:
    """The rows of ``m`` in no ranked group: always returned."""
    ranked = {r for g in m.ranked for r in g.rows}
    return [j for j in range(len(m.keys)) if j not in ranked]


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


def _rules(grid: WorkingGrid, items, blocks: list[_Block], device: torch.device) -> Rule:
    """The first pass's rule for every single map, then every side, in ``measure_batch``'s order, on ``device``.
    Scale groups of an absolute T (eqs. 6, 8, 9): the maps of one image and one unit with the same
    ``KindMaps.scale`` name share one; a side shares its paired row's; None: a scale of its own."""
    k, absolute, groups = [], [], []
    side_k, side_absolute, side_groups = [], [], []
    named: dict[tuple[int, str], int] = {}  # (block, scale name) -> group
    count = 0

    def group(b: _Block, name: str | None) -> int:
        nonlocal count
        if name is None or (id(b), name) not in named:
            count += 1
            if name is not None:
                named[(id(b), name)] = count - 1
            return count - 1
        return named[(id(b), name)]

    for b in blocks:
        wanted = Rule.cells_wanted(items[b.item][0].threshold, grid.cells)
        rule_k, rule_t = (-1, float(items[b.item][0].threshold.absolute)) if wanted is None else (wanted, 0.0)
        for name in b.maps.scale:
            k.append(rule_k)
            absolute.append(rule_t)
            groups.append(group(b, name))
        for _ in range(b.maps.n_sides):  # pass 1 only counts a side's positive cells; its peak joins the pair's scale
            side_k.append(0)
            side_absolute.append(0.0)
            side_groups.append(group(b, b.maps.scale[b.maps.paired]))
    return Rule(to_device(k + side_k, device, torch.long), to_device(absolute + side_absolute, device, torch.float32),
                to_device(groups + side_groups, device, torch.long), k_max=max(k + side_k, default=0),
                any_absolute=any(v < 0 for v in k))
