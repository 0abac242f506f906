"""Heatmap -> region on a bounded working grid: thresholding (eqs. 6, 8, 9) and strength (eqs. 15-17).

Every map is upsampled bilinearly from the feature grid (h, w) to a working grid of G x G cells covering the centre
crop the model saw (default G = the crop's side, e.g. 224), thresholded and measured there, for ALL maps of a batch
at once: one upsampling matmul, one selection, no per-map host sync. The cost depends on G and the number of maps,
never on the photo's size. A mask reaches original pixels through the exact inverse of resize + crop: each
original pixel takes the cell its centre falls in (``masks.CellFrame``); pixels outside the crop are never selected.

Example:
    >>> import torch
    >>> grid = WorkingGrid(side=4, crop=224)
    >>> maps = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])                  # (M, h, w): right-top cell salient
    >>> m = grid.measure(maps, Rule.coverage_of(Threshold(coverage=0.25), grid.cells).expand(1))
    >>> m.kept.tolist(), grid.cell_masks(maps, m.tau).int().tolist()
    ([4], [[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .masks import CellFrame
from .options import Threshold
from .preprocess import Geometry, upsample_to_original

CHUNK_CELLS = 16_000_000  # working-grid values per chunk (64 MB of float32): bounds memory for any number of maps


@dataclass(frozen=True)
class Rule:
    """How many cells each map keeps: ``k`` (M,) a count, or -1 where ``absolute`` (M,) T applies: value > T x the
    largest working-grid value of all maps of the same ``scale_group`` (M,) (default: each map its own group)."""

    k: torch.Tensor  # (M,) long
    absolute: torch.Tensor  # (M,) float
    scale_group: torch.Tensor | None = None  # (M,) long: maps sharing T's scale; None: one group per map

    @staticmethod
    def coverage_of(threshold: Threshold, cells: int) -> "Rule":
        if threshold.coverage is not None:
            return Rule(torch.tensor([int(round(threshold.coverage * cells))]), torch.zeros(1))
        return Rule(torch.tensor([-1]), torch.tensor([float(threshold.absolute)]))

    def expand(self, n: int) -> "Rule":
        return Rule(self.k.expand(n), self.absolute.expand(n))

    def grouped(self, scale_group: torch.Tensor) -> "Rule":
        return Rule(self.k, self.absolute, scale_group)

    def groups(self) -> torch.Tensor:
        return torch.arange(len(self.k)) if self.scale_group is None else self.scale_group

    @staticmethod
    def cat(rules: list["Rule"]) -> "Rule":
        """Rules of several images in one; scale groups stay apart (renumbered)."""
        groups, base = [], 0
        for r in rules:
            g = r.groups()
            groups.append(g + base)
            base += int(g.max()) + 1 if len(g) else 0
        return Rule(torch.cat([r.k for r in rules]), torch.cat([r.absolute for r in rules]),
                    torch.cat(groups) if groups else None)


@dataclass(frozen=True)
class Measured:
    """Per map (M,): wanted, the cells the rule asks for; tau, the value a cell needs to be kept (+inf: none);
    kept, the cells kept (min(wanted, positive), more only on exact ties at tau); positive, the cells with a
    positive value (-1 where not counted); strength, eq. (15): the mean of the kept cells' values (0 when none)."""

    wanted: torch.Tensor
    tau: torch.Tensor
    kept: torch.Tensor
    positive: torch.Tensor
    strength: torch.Tensor


class WorkingGrid:
    """G x G cells over the model's square centre crop of ``crop`` pixels."""

    def __init__(self, side: int, crop: int):
        if side < 1:
            raise ValueError(f"working grid side must be >= 1, got {side}")
        self.side, self.crop = int(side), int(crop)

    @property
    def cells(self) -> int:
        return self.side * self.side

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """Bilinear (align_corners=False, border clamp) feature-grid maps (M, h, w) -> (M, G, G)."""
        wy, wx = _weights(self.side, *maps.shape[-2:], str(maps.device))
        return wy @ maps.float() @ wx.T

    def measure(self, maps: torch.Tensor, rule: Rule, count_positive: torch.Tensor | None = None) -> Measured:
        """Thresholds every map (M, h, w) by ``rule``; only positive cells can be kept. Chunked over maps so the
        working values never exceed CHUNK_CELLS. ``count_positive`` (M,) bool: maps whose positive cells to count."""
        M = maps.shape[0]
        flags = torch.zeros(M, dtype=torch.bool) if count_positive is None else count_positive
        out = [_measure(maps.new_zeros(0, self.cells), rule.k[:0], rule.absolute[:0], flags[:0],
                        rule.absolute[:0])]  # M = 0 stays valid
        step = max(1, CHUNK_CELLS // self.cells)
        scale = self._scales(maps, rule, step)
        for s in range(0, M, step):
            values = self.upsample(maps[s:s + step]).flatten(1)  # (m, G*G)
            out.append(_measure(values, rule.k[s:s + step].to(values.device),
                                rule.absolute[s:s + step].to(values.device), flags[s:s + step].to(values.device),
                                scale[s:s + step].to(values.device)))
        return Measured(*(torch.cat([getattr(m, f) for m in out]) for f in ("wanted", "tau", "kept", "positive", "strength")))

    def _scales(self, maps: torch.Tensor, rule: Rule, step: int) -> torch.Tensor:
        """(M,) the scale T multiplies: the largest working-grid value over each map's scale group. Peaks are only
        computed when some map has an absolute T (one pass more over the maps); else 0 (unused)."""
        if not bool((rule.k < 0).any()):
            return maps.new_zeros(maps.shape[0], dtype=torch.float32)
        peaks = torch.cat([maps.new_zeros(0, dtype=torch.float32)] + [
            self.upsample(maps[s:s + step]).flatten(1).amax(1) for s in range(0, maps.shape[0], step)])
        groups = rule.groups().to(peaks.device)
        top = torch.full((int(groups.max()) + 1,), -math.inf, device=peaks.device).scatter_reduce(
            0, groups, peaks, "amax")
        return top[groups]

    def cell_masks(self, maps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """(M, h, w) maps and their thresholds (M,) -> kept cells (M, G, G) bool."""
        return self.upsample(maps) >= tau.to(maps.device)[:, None, None]

    def frame(self, geo: Geometry) -> CellFrame:
        """Which cell each original pixel of ``geo``'s image falls in (-1 outside the crop)."""
        return CellFrame(_axis_cells(geo.height, geo.scale_y, geo.top, geo.crop, self.side),
                         _axis_cells(geo.width, geo.scale_x, geo.left, geo.crop, self.side), self.side)


def _axis_cells(n: int, scale: float, offset: int, crop: int, side: int) -> np.ndarray:
    pos = (np.arange(n, dtype=np.float64) + 0.5) * scale - offset  # pixel centres in crop pixels
    cell = np.minimum(np.floor(pos * side / crop), side - 1).astype(np.int64)
    return np.where((pos >= 0) & (pos < crop), cell, -1)


@lru_cache(maxsize=64)
def _weights(side: int, h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _axis_weights(side, h, device), _axis_weights(side, w, device)


def _axis_weights(side: int, n: int, device: str) -> torch.Tensor:
    """(side, n) bilinear weights from n feature-grid cells to ``side`` working cells over the same crop."""
    u = ((torch.arange(side, dtype=torch.float64) + 0.5) * n / side - 0.5).clamp(0, n - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = (u - i0).float()
    weights = torch.zeros(side, n)
    weights.scatter_add_(1, i0[:, None], (1 - frac)[:, None])
    weights.scatter_add_(1, i1[:, None], frac[:, None])
    return weights.to(device)


def _measure(values: torch.Tensor, k: torch.Tensor, absolute: torch.Tensor, count_positive: torch.Tensor,
             scale: torch.Tensor) -> Measured:
    """values (M, N); k (M,) cells wanted, -1 where ``absolute`` T applies to values / ``scale`` (M,).

    A cell is kept when its value reaches tau: the k-th largest value for a count, just above T x scale for an
    absolute threshold, the smallest positive value when fewer cells than wanted are positive. For counts the
    strength comes from the top-k sum (cells tied at tau add tau each), so a map costs one selection, and a
    counting pass only when a cell outside its top k ties with tau; ``positive`` is counted only where ``count_positive`` asks (-1 elsewhere)."""
    M, N = values.shape
    floor = torch.finfo(values.dtype).tiny
    counted = k >= 0
    wanted = k.clone()
    tau = torch.full((M,), math.inf, device=values.device, dtype=values.dtype)
    if not bool(counted.all()):  # one host sync per chunk
        rows = (~counted).nonzero()[:, 0]
        sub = values[rows]
        limit = torch.nextafter(absolute[rows] * scale[rows].to(values.dtype).clamp_min(floor),
                                torch.tensor(math.inf, dtype=values.dtype, device=values.device))
        wanted[rows] = (sub >= limit[:, None]).sum(1)  # map / scale > T
        tau[rows] = limit
    wanted = wanted.clamp(max=N)
    select = counted & (wanted > 0)
    kth, top_sum, tied = kth_largest(values, torch.where(select, wanted, 0))
    tau = torch.where(select, kth, tau)
    tau = torch.where(wanted == 0, math.inf, tau)
    few = (wanted > 0) & (tau <= 0)  # fewer positive cells than wanted: keep every positive one
    tau = torch.where(few, floor, tau)
    direct = few | ~counted
    # a count keeps exactly its top k cells unless a cell outside them ties with tau: only those rows, the rows of
    # an absolute T and the few-positive rows take a counting pass over their cells
    kept = torch.where(select, wanted, 0)
    recount = (direct | (select & tied)) & (wanted > 0)
    if bool(recount.any()):
        rows = recount.nonzero()[:, 0]
        kept[rows] = (values[rows] >= tau[rows, None]).sum(1)
    strength = (top_sum + (kept - wanted) * tau.clamp(max=torch.finfo(values.dtype).max)) / kept.clamp_min(1)
    if bool(direct.any()):
        rows = direct.nonzero()[:, 0]
        keep = values[rows] >= tau[rows, None]
        strength[rows] = (values[rows] * keep).sum(1) / kept[rows].clamp_min(1)
    strength = torch.where(kept > 0, strength, 0.0)
    positive = torch.full_like(kept, -1)
    if bool(count_positive.any()):
        rows = count_positive.nonzero()[:, 0]
        positive[rows] = (values[rows] > 0).sum(1)
    return Measured(wanted, tau, kept, positive, strength)


def kth_largest(values: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k[m]-th largest value of each row of ``values`` (M, N) (+inf where k[m] == 0, exact), the sum of the
    k[m] largest, and whether a value outside those k equals the k-th (a tie: counting ``values >= kth`` then
    gives more than k). One unsorted top-(k+1) per distinct k (a coverage gives every map the same k): no row is
    sorted.

    Example:
        >>> kth_largest(torch.tensor([[3., 1., 2., 2.], [4., 3., 2., 1.]]), torch.tensor([2, 2]))
        (tensor([2., 3.]), tensor([5., 7.]), tensor([ True, False]))
    """
    M, N = values.shape
    out = torch.full(k.shape, math.inf, device=values.device, dtype=values.dtype)
    total = torch.zeros(k.shape, device=values.device, dtype=values.dtype)
    tied = torch.zeros(k.shape, device=values.device, dtype=torch.bool)
    for kk in torch.unique(k[k > 0]).tolist():  # one host sync; typically a single k
        every = bool((k == kk).all())
        rows = slice(None) if every else (k == kk).nonzero()[:, 0]
        top = torch.topk(values if every else values[rows], min(kk + 1, N), dim=1, sorted=False).values
        if kk < N:  # the two smallest of the k + 1 largest: the (k+1)-th and the k-th value
            last, kth = torch.topk(top, 2, dim=1, largest=False, sorted=True).values.unbind(1)
            out[rows], total[rows], tied[rows] = kth, top.sum(1) - last, last == kth
        else:
            out[rows], total[rows] = top.amin(1), top.sum(1)
    return out, total, tied


def regions(maps: torch.Tensor, geo: Geometry, threshold: Threshold, grid: WorkingGrid | None = None) -> list:
    """Feature-grid maps (M, h, w) of one image -> M Regions in original pixels, each thresholded on its own
    (default grid: one cell per crop pixel)."""
    from .results import Region

    grid = grid or WorkingGrid(geo.crop, geo.crop)
    measured = grid.measure(maps, Rule.coverage_of(threshold, grid.cells).expand(maps.shape[0]))
    cells = grid.cell_masks(maps, measured.tau).cpu().numpy()
    frame = grid.frame(geo)
    return [Region.of(cells[m], frame, maps[m].detach().float().cpu(), s)
            for m, s in enumerate(measured.strength.tolist())]


def full_resolution_region(heat: torch.Tensor, geo: Geometry, coverage: float) -> tuple[torch.Tensor, float]:
    """The reference the working grid is checked against (tests, benchmarks/working_grid_fidelity.py): the map
    (h, w) upsampled bilinearly to EVERY original pixel, the top ``coverage`` share of the crop's original pixels
    kept. Returns the (H0, W0) mask and its strength (eq. 15). Its cost grows with the photo's pixels."""
    values, inside = upsample_to_original(heat, geo)
    count = int(round(coverage * int(inside.sum())))
    top = torch.topk(values.flatten(), count)
    mask = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    mask[top.indices] = True
    return mask.reshape(values.shape), float(top.values.mean())
