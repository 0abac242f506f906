"""Baseline regions for the proxy protocol (GALORE TPAMI 2023 §VI-B, Table III): every scored segment of a
``proxy.ProxyReport`` re-scored with a region of the same number of working-grid cells that does not come from the
explanation, against the segment's own ground truth.

  * ``random``: that many cells drawn uniformly at random (one draw per seed);
  * ``object_prior``: random cells of the object (approximated by disks about its visible part points, see
    ``object_prior_values``) first: it knows where the object is, not which part matters;
  * ``attributive``: the attributive region of y* of the same image (eq. 3), at the same coverage;
  * any map given to ``baseline_curves`` per segment (image, kind, classes), e.g. FinerCAM (``search_baselines.finer_cam_values``),
    cut to the same number of cells.

Counts per level are the protocol's own (``proxy.coverage_counts``), cut by ``proxy.sweep`` and scored by
``proxy.precision_recall``, so a baseline differs from the explanation only in its cell values. Pure numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .proxy import GroundTruth, ProxyReport, Segment, coverage_counts, precision_recall, sweep

BASELINES = ("random", "object_prior", "attributive")


def segment_truth(gt: GroundTruth, segment: Segment) -> np.ndarray:
    """(K,) the ground-truth parts the protocol scored ``segment`` against (proxy._score's rules)."""
    a, *others = segment.classes
    if segment.kind == "deliberative":
        return gt.insecure_parts(segment.classes)
    return gt.discriminant_parts(a, others)


def random_values(cells: int, rng: np.random.Generator) -> np.ndarray:
    """(G*G,) uniform values: the top n of them are n cells drawn at random."""
    return rng.random(cells) + 1e-9


def object_cells(part_cells: np.ndarray, side: int) -> np.ndarray:
    """(G*G,) bool: the object approximated from its seen part points (``part_cells`` (K,) flat cells, -1 unseen;
    ``side`` G): the cells within radius r of some point, r the median distance (in cells) from a point to its
    nearest other point (at least 1). No point: every cell."""
    seen = part_cells[part_cells >= 0]
    if not len(seen):
        return np.ones(side * side, bool)
    rows, cols = np.divmod(np.arange(side * side), side)  # (G*G,) each
    pr, pc = np.divmod(seen, side)  # (P,)
    between = np.hypot(pr[:, None] - pr[None], pc[:, None] - pc[None])  # (P, P)
    np.fill_diagonal(between, np.inf)
    radius = max(1.0, float(np.median(between.min(1)))) if len(seen) > 1 else 1.0
    near = np.zeros(side * side, bool)
    for r, c in zip(pr, pc):  # one disk per point
        near |= (rows - r) ** 2 + (cols - c) ** 2 <= radius * radius
    return near


def object_prior_values(part_cells: np.ndarray, side: int, rng: np.random.Generator,
                        obj: np.ndarray | None = None) -> np.ndarray:
    """(G*G,) values whose top cells are random cells of the object (``object_cells``, or ``obj`` when given)
    first, then random cells elsewhere: a region of n cells spread evenly over the object knows where the object
    is, not which part matters."""
    obj = object_cells(part_cells, side) if obj is None else obj
    return rng.random(side * side) + 1e-9 + obj


def baseline_curves(report: ProxyReport, gt: GroundTruth, side: int, seeds: Sequence[int] = (0, 1, 2),
                    maps: dict[str, dict[tuple[int, str, tuple[int, ...]], np.ndarray]] | None = None
                    ) -> dict[str, dict[str, dict[str, list]]]:
    """baseline -> "kind/dim" -> {"precision": [per seed: (L,) nanmean over segments], "recall": [...]},
    for the query-side segments of ``report`` on a working grid of side G = ``side``. ``maps``: more baselines,
    name -> (image id, kind, classes) of a segment -> (G*G,) values; a segment without a value is not scored by that one.
    Like the attributive region they do not depend on the seed (one curve)."""
    counts = coverage_counts(side * side, report.settings.coverages)
    attributive = {s.image_id: s for s in report.segments if s.kind == "attributive"}
    objects: dict[int, np.ndarray] = {}  # image id -> object cells (query sides share the image's points)
    maps = maps or {}
    names = (*BASELINES, *maps)
    out: dict[str, dict[str, dict[str, list]]] = {b: {} for b in names}
    for key, segments in _groups(report.segments).items():
        for seed in seeds:
            scored = {b: ([], []) for b in names}
            for s in segments:
                truth = segment_truth(gt, s)
                rng = np.random.default_rng([seed, s.image_id, len(s.classes), *s.classes])
                if s.image_id not in objects:
                    objects[s.image_id] = object_cells(s.cells, side)
                for name, values in (("random", random_values(side * side, rng)),
                                     ("object_prior", object_prior_values(s.cells, side, rng, objects[s.image_id]))):
                    inside = sweep(values, s.cells, counts).inside
                    p, r = precision_recall(inside, truth, s.seen)
                    scored[name][0].append(p)
                    scored[name][1].append(r)
                if s.image_id in attributive:
                    p, r = precision_recall(attributive[s.image_id].inside, truth, s.seen)
                    scored["attributive"][0].append(p)
                    scored["attributive"][1].append(r)
                for name, values in maps.items():
                    segment = (s.image_id, s.kind, tuple(s.classes))
                    if seed == seeds[0] and segment in values:
                        inside = sweep(values[segment], s.cells, counts).inside
                        p, r = precision_recall(inside, truth, s.seen)
                        scored[name][0].append(p)
                        scored[name][1].append(r)
            for name, (ps, rs) in scored.items():
                if not ps or (name not in ("random", "object_prior") and seed != seeds[0]):
                    continue  # the attributive region and the given maps do not depend on the seed
                curve = out[name].setdefault(key, {"precision": [], "recall": []})
                curve["precision"].append(_nanmean(ps))
                curve["recall"].append(_nanmean(rs))
    return out


def segment_curves(report: ProxyReport, gt: GroundTruth) -> dict[str, dict[str, list]]:
    """"kind/dim" -> {"precision": (L,), "recall": (L,)}: the report's own query-side regions re-scored against
    ``gt`` (e.g. ``synthetic_truth.ConstructionTruth``), nanmean over segments, as ``baseline_curves`` scores."""
    out = {}
    for key, segments in _groups(report.segments).items():
        scored = [precision_recall(s.inside, segment_truth(gt, s), s.seen) for s in segments]
        out[key] = {"precision": _nanmean([p for p, _ in scored]), "recall": _nanmean([r for _, r in scored])}
    return out


def _groups(segments: Sequence[Segment]) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    for s in segments:
        if s.side == "query" and s.cells is not None:
            out.setdefault(f"{s.kind}/{s.dim}", []).append(s)
    return out


def _nanmean(rows: list[np.ndarray]) -> list[float | None]:
    a = np.array(rows, dtype=np.float64)  # (S, L)
    with np.errstate(invalid="ignore"):
        valid = (~np.isnan(a)).sum(0)
        mean = np.where(valid > 0, np.nansum(a, 0) / np.maximum(valid, 1), np.nan)
    return [None if np.isnan(m) else float(m) for m in mean]


def at(coverages: Sequence[float], values: Sequence, coverage: float):
    """The value at ``coverage`` of a per-level list, or None when that level was not swept."""
    for c, v in zip(coverages, values):
        if abs(c - coverage) < 1e-9:
            return v
    return None
