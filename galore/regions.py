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
    largest working-grid value of all maps of the same ``scale_group`` (M,) (default: each map its own group; ids in
    [0, M)). Host-side hints, known from the options without reading the device: ``k_max``, no map asks for more
    cells (None: unknown); ``any_absolute``, some map has an absolute T (None: unknown). They only bound the
    sync-free path's work; a wrong hint would give wrong regions, an absent one costs more work, never a sync."""

    k: torch.Tensor  # (M,) long
    absolute: torch.Tensor  # (M,) float
    scale_group: torch.Tensor | None = None  # (M,) long: maps sharing T's scale; None: one group per map
    k_max: int | None = None
    any_absolute: bool | None = None

    @staticmethod
    def cells_wanted(threshold: Threshold, cells: int) -> int | None:
        """The cells a coverage keeps of ``cells`` (host int); None for an absolute T (it depends on the map)."""
        return None if threshold.coverage is None else int(round(threshold.coverage * cells))

    @staticmethod
    def coverage_of(threshold: Threshold, cells: int, device: torch.device | str = "cpu") -> "Rule":
        k = Rule.cells_wanted(threshold, cells)
        if k is not None:
            return Rule(torch.full((1,), k, dtype=torch.long, device=device), torch.zeros(1, device=device),
                        k_max=k, any_absolute=False)
        return Rule(torch.full((1,), -1, dtype=torch.long, device=device),
                    torch.full((1,), float(threshold.absolute), device=device), k_max=0, any_absolute=True)

    def expand(self, n: int) -> "Rule":
        return Rule(self.k.expand(n), self.absolute.expand(n), None, self.k_max, self.any_absolute)

    def grouped(self, scale_group: torch.Tensor) -> "Rule":
        return Rule(self.k, self.absolute, scale_group, self.k_max, self.any_absolute)

    def to(self, device: torch.device) -> "Rule":
        group = None if self.scale_group is None else self.scale_group.to(device)
        return Rule(self.k.to(device), self.absolute.to(device), group, self.k_max, self.any_absolute)

    def groups(self) -> torch.Tensor:
        return torch.arange(len(self.k), device=self.k.device) if self.scale_group is None else self.scale_group

    @staticmethod
    def cat(rules: list["Rule"]) -> "Rule":
        """Rules of several images in one; scale groups stay apart (renumbered). Reads each rule's group ids on the
        host (one sync per rule): not for the hot path."""
        groups, base = [], 0
        for r in rules:
            g = r.groups()
            groups.append(g + base)
            base += int(g.max()) + 1 if len(g) else 0
        known = all(r.k_max is not None for r in rules)
        return Rule(torch.cat([r.k for r in rules]), torch.cat([r.absolute for r in rules]),
                    torch.cat(groups) if groups else None,
                    max((r.k_max for r in rules), default=0) if known else None,
                    None if any(r.any_absolute is None for r in rules) else any(r.any_absolute for r in rules))


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
    """G x G cells over the model's square centre crop of ``crop`` pixels.

    ``sync_free``: measure without reading any device value on the host (full-width ``torch.where`` instead of
    data-dependent branches; the counting passes run over every map). None (default): sync-free on every device but
    the CPU, where a host read costs no synchronisation and the branches skip most of the work."""

    def __init__(self, side: int, crop: int, sync_free: bool | None = None):
        if side < 1:
            raise ValueError(f"working grid side must be >= 1, got {side}")
        self.side, self.crop = int(side), int(crop)
        self.sync_free = sync_free

    @property
    def cells(self) -> int:
        return self.side * self.side

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """Bilinear (align_corners=False, border clamp) feature-grid maps (M, h, w) -> (M, G, G)."""
        wy, wx = _weights(self.side, *maps.shape[-2:], str(maps.device))
        return wy @ maps.float() @ wx.T

    def is_sync_free(self, device: torch.device) -> bool:
        return device.type != "cpu" if self.sync_free is None else bool(self.sync_free)

    def measure(self, maps: torch.Tensor, rule: Rule, count_positive: torch.Tensor | None = None) -> Measured:
        """Thresholds every map (M, h, w) by ``rule``; only positive cells can be kept. Chunked over maps so the
        working values never exceed CHUNK_CELLS. ``count_positive`` (M,) bool: maps whose positive cells to count.
        Everything stays on the maps' device; the rule is moved there if it is not."""
        M, device = maps.shape[0], maps.device
        rule = rule.to(device)
        flags = (torch.zeros(M, dtype=torch.bool, device=device) if count_positive is None
                 else count_positive.to(device))
        if self.is_sync_free(device):
            k_max = self.cells if rule.k_max is None else min(rule.k_max, self.cells)

            def measure(values, k, absolute, positive, scale):
                return _measure_sync_free(values, k, absolute, positive, scale, k_max, rule.any_absolute)
        else:
            measure = _measure
        out = [measure(maps.new_zeros(0, self.cells), rule.k[:0], rule.absolute[:0], flags[:0],
                       rule.absolute[:0])]  # M = 0 stays valid
        step = max(1, CHUNK_CELLS // self.cells)
        scale = self._scales(maps, rule, step)
        for s in range(0, M, step):
            values = self.upsample(maps[s:s + step]).flatten(1)  # (m, G*G)
            out.append(measure(values, rule.k[s:s + step], rule.absolute[s:s + step], flags[s:s + step],
                               scale[s:s + step]))
        return Measured(*(torch.cat([getattr(m, f) for m in out]) for f in ("wanted", "tau", "kept", "positive", "strength")))

    def _scales(self, maps: torch.Tensor, rule: Rule, step: int) -> torch.Tensor:
        """(M,) the scale T multiplies: the largest working-grid value over each map's scale group. Peaks are only
        computed when some map may have an absolute T (one pass more over the maps); else 0 (unused). Whether one
        has is read from the rule's host hint, or (CPU only, where it costs no sync) from its values."""
        M = maps.shape[0]
        absent = rule.any_absolute is False or (rule.any_absolute is None and not self.is_sync_free(maps.device)
                                                and not bool((rule.k < 0).any()))
        if absent:
            return maps.new_zeros(M, dtype=torch.float32)
        peaks = torch.cat([maps.new_zeros(0, dtype=torch.float32)] + [
            self.upsample(maps[s:s + step]).flatten(1).amax(1) for s in range(0, M, step)])
        groups = rule.groups().to(peaks.device)
        top = torch.full((M,), -math.inf, device=peaks.device).scatter_reduce(0, groups, peaks, "amax")  # ids < M
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
    """(side, n) bilinear weights from n feature-grid cells to ``side`` working cells over the same crop. Built on
    the host in float64 (not every device has it), moved to ``device`` once: ``_weights`` caches them."""
    u = ((torch.arange(side, dtype=torch.float64, device="cpu") + 0.5) * n / side - 0.5).clamp(0, n - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = (u - i0).float()
    weights = torch.zeros(side, n, device="cpu")
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


def _measure_sync_free(values: torch.Tensor, k: torch.Tensor, absolute: torch.Tensor,
                       count_positive: torch.Tensor, scale: torch.Tensor, k_max: int,
                       any_absolute: bool | None) -> Measured:
    """``_measure`` without reading a device value on the host: the same numbers (tau and the counts exactly), with
    every data-dependent branch resolved by a full-width ``torch.where``. ``k_max`` (host): no counted map wants
    more cells; ``any_absolute`` (host hint, None: unknown) False skips the absolute-T count."""
    M, N = values.shape
    floor = torch.finfo(values.dtype).tiny
    counted = k >= 0
    tau = torch.full((M,), math.inf, device=values.device, dtype=values.dtype)
    wanted = k
    if any_absolute is not False:
        limit = torch.nextafter(absolute * scale.to(values.dtype).clamp_min(floor), tau)  # just above T x scale
        wanted = torch.where(counted, k, (values >= limit[:, None]).sum(1))  # map / scale > T
        tau = torch.where(counted, tau, limit)
    wanted = wanted.clamp(max=N)
    select = counted & (wanted > 0)
    kth, top_sum, tied = _kth_largest_sync_free(values, torch.where(select, wanted, 0), k_max)
    tau = torch.where(select, kth, tau)
    tau = torch.where(wanted == 0, math.inf, tau)
    few = (wanted > 0) & (tau <= 0)  # fewer positive cells than wanted: keep every positive one
    tau = torch.where(few, floor, tau)
    direct = few | ~counted
    keep = values >= tau[:, None]  # (M, N)
    recount = (direct | (select & tied)) & (wanted > 0)
    kept = torch.where(recount, keep.sum(1), torch.where(select, wanted, 0))
    strength = (top_sum + (kept - wanted) * tau.clamp(max=torch.finfo(values.dtype).max)) / kept.clamp_min(1)
    strength = torch.where(direct, torch.where(keep, values, 0.0).sum(1) / kept.clamp_min(1), strength)
    strength = torch.where(kept > 0, strength, 0.0)
    positive = torch.where(count_positive, (values > 0).sum(1), -1)
    return Measured(wanted, tau, kept, positive, strength)


def _kth_largest_sync_free(values: torch.Tensor, k: torch.Tensor, k_max: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``kth_largest`` for any mix of k (M,) <= ``k_max`` (host int) without a host read: one sorted top-(k_max + 1)
    per row, read at each row's own k."""
    M, N = values.shape
    K = max(1, min(k_max + 1, N))
    if N == 0:
        inf = torch.full((M,), math.inf, device=values.device, dtype=values.dtype)
        return inf, torch.zeros_like(inf), torch.zeros(M, dtype=torch.bool, device=values.device)
    top = torch.topk(values, K, dim=1, sorted=True).values  # (M, K), descending
    kth = top.gather(1, (k - 1).clamp(0, K - 1)[:, None])[:, 0]
    after = top.gather(1, k.clamp(0, K - 1)[:, None])[:, 0]  # the (k+1)-th largest where k < K
    rank = torch.arange(K, device=values.device)
    total = torch.where(rank < k[:, None], top, 0.0).sum(1)
    has = k > 0
    return (torch.where(has, kth, math.inf), torch.where(has, total, 0.0),
            has & (k < N) & (after == kth))


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
    measured = grid.measure(maps, Rule.coverage_of(threshold, grid.cells, maps.device).expand(maps.shape[0]))
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
