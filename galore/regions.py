"""Heatmap -> region on a bounded working grid: thresholding (eqs. 6, 8, 9) and strength (eqs. 15-17).

Every map is upsampled bilinearly from the feature grid (h, w) to a working grid of G x G cells covering the centre
crop the model saw (default G = the crop's side, e.g. 224), thresholded and measured there, for ALL maps of a batch
at once, no per-map host sync. The cost depends on G and the number of maps, never on the photo's size. Two paths
give the same cells (tau, counts and masks exactly, ties included): on the CPU the grid is cut into blocks of at
most BLOCK x BLOCK cells inside which each map is bilinear, so its four corners bound a block; a threshold is
bracketed from these bounds and only the blocks that straddle it are upsampled (``_Blocks``, about a fifth of the
cells at a 10 % coverage of 7 x 7 maps); elsewhere every cell is upsampled and selected without a host read
(``WorkingGrid.sync_free``). Where the C kernel is built (``galore/_regions.c``, by ``pip install``) the CPU runs
it instead of the torch block path: the same cells, in a few calls per batch instead of a few hundred
(``WorkingGrid.compiled``). A mask reaches original pixels through the exact inverse of resize + crop: each
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
from .preprocess import Geometry

try:  # the regions stage in C (galore/_regions.c); absent where no compiler built it: the torch paths run
    from . import _regions as _kernel
except ImportError:  # pragma: no cover - depends on the build
    _kernel = None

COMPILED = _kernel is not None  # whether this install has the C kernel

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

    def to(self, device: torch.device) -> "Rule":
        group = None if self.scale_group is None else self.scale_group.to(device)
        return Rule(self.k.to(device), self.absolute.to(device), group, self.k_max, self.any_absolute)

    def groups(self) -> torch.Tensor:
        return torch.arange(len(self.k), device=self.k.device) if self.scale_group is None else self.scale_group


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
    the CPU, where a host read costs no synchronisation and the branches skip most of the work.

    ``compiled``: off the sync-free path, measure and cut masks with the C kernel (``COMPILED``) rather than the
    torch block path; the same numbers. None (default): where it is built; True requires it.

    ``on_host``: off the CPU, bring a batch's coarse maps (M, h, w; a few KB) to the host in one copy and measure
    them there with the C kernel, rather than on the device (whose sync-free path is hundreds of small kernels:
    on an H200 it took longer than the forward). None (default): for batches of at most HOST_MAPS maps, where the
    kernel is built, ``compiled`` allows it and ``sync_free`` is not forced on; True: always, on every device (the
    CPU's copy is a no-op); False: never."""

    def __init__(self, side: int, crop: int, sync_free: bool | None = None, compiled: bool | None = None,
                 on_host: bool | None = None):
        if side < 1:
            raise ValueError(f"working grid side must be >= 1, got {side}")
        if (compiled or on_host) and not COMPILED:
            raise RuntimeError("the regions kernel galore._regions is not built: pip install the package with a C "
                               "compiler present")
        self.side, self.crop = int(side), int(crop)
        self.sync_free, self.compiled, self.on_host = sync_free, compiled, on_host

    @property
    def cells(self) -> int:
        return self.side * self.side

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """Bilinear (align_corners=False, border clamp) feature-grid maps (M, h, w) -> (M, G, G): columns first, then
        rows, each value a * w0 + b * w1 in separate elementwise operations (IEEE-rounded on every device, no fused
        multiply-add), so a value is the same bits whether the whole grid or any block of it is computed
        (``_Blocks``), on any device."""
        blocks = _blocks(self.side, *maps.shape[-2:], str(maps.device))
        return blocks.y.lerp(blocks.x.lerp(maps.float(), 2), 1)

    def is_sync_free(self, device: torch.device) -> bool:
        return device.type != "cpu" if self.sync_free is None else bool(self.sync_free)

    def measures_on_host(self, device: torch.device, maps: int) -> bool:
        """Whether a batch of ``maps`` maps on ``device`` is copied to the host and measured there (``on_host``; on
        the CPU the copy is a no-op, so only True takes that path there). None: at most HOST_MAPS maps."""
        if self.on_host is not None:
            return self.on_host
        return (device.type != "cpu" and maps <= HOST_MAPS and COMPILED and self.compiled is not False
                and self.sync_free is not True)

    def _uses_kernel(self, maps: torch.Tensor) -> bool:
        """The C kernel takes these maps: CPU, off the sync-free path, finite (the torch paths handle the rest)."""
        return (COMPILED and self.compiled is not False and maps.device.type == "cpu"
                and not self.is_sync_free(maps.device) and bool(torch.isfinite(maps).all()))

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
            blocks = _blocks(self.side, *maps.shape[-2:], str(device))
            kernel = self._uses_kernel(maps)

            def measure(coarse, k, absolute, positive, scale):
                if kernel and coarse.shape[0]:
                    return _measure_compiled(coarse, k, absolute, positive, scale, blocks)
                return _measure_blocks(coarse, k, absolute, positive, scale, blocks)
        sync_free = self.is_sync_free(device)
        step = max(1, CHUNK_CELLS // self.cells)
        scale = self._scales(maps, rule, step)
        out = []
        for s in range(0, M, step):
            chunk = self.upsample(maps[s:s + step]).flatten(1) if sync_free else maps[s:s + step].float()
            out.append(measure(chunk, rule.k[s:s + step], rule.absolute[s:s + step], flags[s:s + step],
                               scale[s:s + step]))
        if not out:  # M = 0: empty results of the right dtypes
            empty = maps.new_zeros(0, self.cells) if sync_free else maps[:0].float()
            out.append(measure(empty, rule.k[:0], rule.absolute[:0], flags[:0], rule.absolute[:0]))
        return Measured(*(torch.cat([getattr(m, f) for m in out])
                          for f in ("wanted", "tau", "kept", "positive", "strength")))

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
        """(M, h, w) maps and their thresholds (M,) -> kept cells (M, G, G) bool. Off the sync-free path only the
        blocks that straddle tau are upsampled (by the C kernel where built, else ``_Bounded.masks``)."""
        tau = tau.to(maps.device)
        if self._uses_kernel(maps):
            return _masks_compiled(maps, tau, _blocks(self.side, *maps.shape[-2:], "cpu"))
        if self.is_sync_free(maps.device) or not bool(torch.isfinite(maps).all()):
            return self.upsample(maps) >= tau[:, None, None]
        blocks = _blocks(self.side, *maps.shape[-2:], str(maps.device))
        return blocks.masks(maps.float(), tau).reshape(-1, self.side, self.side)

    def frame(self, geo: Geometry) -> CellFrame:
        """Which cell each original pixel of ``geo``'s image falls in (-1 outside the crop). Photos of one size
        share a frame (the last 32 sizes are cached, with their per-cell pixel counts: about 0.5 MB each at G = 224)."""
        return _frame(geo, self.side)


@lru_cache(maxsize=32)
def _frame(geo: Geometry, side: int) -> CellFrame:
    return CellFrame(_axis_cells(geo.height, geo.scale_y, geo.top, geo.crop, side),
                     _axis_cells(geo.width, geo.scale_x, geo.left, geo.crop, side), side)


def _axis_cells(n: int, scale: float, offset: int, crop: int, side: int) -> np.ndarray:
    pos = (np.arange(n, dtype=np.float64) + 0.5) * scale - offset  # pixel centres in crop pixels
    cell = np.minimum(np.floor(pos * side / crop), side - 1).astype(np.int64)
    return np.where((pos >= 0) & (pos < crop), cell, -1)


# Off the CPU, batches of at most this many maps are measured on the host (``WorkingGrid.on_host``). On an H200 with
# a 16-core host (BENCHMARKS.md, "The GPU path") one image of all six types (26 maps) took 6.7 ms there against
# 12.4 ms on the device; 8 images (about 200 maps) 31.6 against 26.2 ms: the host's cost grows with the maps, the
# device's is mostly launches. 64 keeps the host below that crossover (about 4 images of all six types).
HOST_MAPS = 64

BLOCK = 8  # the host path's block side, in working-grid cells (``_Blocks``)


@lru_cache(maxsize=64)
def _blocks(side: int, h: int, w: int, device: str) -> "_Blocks":
    return _Blocks(side, h, w, device)


class _Axis:
    """One axis of the bilinear upsampling n -> ``side`` (align_corners=False, border clamp): each working cell's two
    feature cells i0, i1 and weights w0 = 1 - frac, w1 = frac (built on the host in float64, float32 on ``device``),
    and the axis cut into segments of at most BLOCK cells sharing i0. Along a segment a value is linear in a monotone
    frac, so its extremes sit at the segment's two ends (``corners``)."""

    def __init__(self, side: int, n: int, device: str):
        u = ((torch.arange(side, dtype=torch.float64, device="cpu") + 0.5) * n / side - 0.5).clamp(0, n - 1)
        i0 = u.floor().long()
        frac = (u - i0).float()
        starts: list[int] = []
        for r, i in enumerate(i0.tolist()):
            if not starts or i != int(i0[r - 1]) or r - starts[-1] >= BLOCK:
                starts.append(r)
        sizes = torch.diff(torch.tensor(starts + [side], dtype=torch.long, device="cpu"))
        i1, w0 = (i0 + 1).clamp(max=n - 1), 1 - frac
        self.host = tuple(a.numpy() for a in (i0, i1, w0, frac))  # the C kernel's view: int64, int64, float32 x 2
        self.i0, self.i1, self.w0, self.w1 = i0.to(device), i1.to(device), w0.to(device), frac.to(device)
        first = torch.tensor(starts, dtype=torch.long, device="cpu")
        offsets = torch.arange(BLOCK, device="cpu")
        self.cells = torch.minimum(first[:, None] + offsets, (first + sizes - 1)[:, None]).to(device)  # (S, BLOCK)
        self.valid = (offsets < sizes[:, None]).to(device)  # (S, BLOCK): False on the repeats that pad a short one
        self.corners = torch.stack([first, first + sizes - 1], 1).flatten().to(device)  # (2S,)
        self.segment = torch.repeat_interleave(torch.arange(len(starts), device="cpu"), sizes).to(device)  # (side,)
        self.sizes, self.sizes_host = sizes.to(device), sizes
        self.first_i0 = i0[first].to(device)  # (S,) the segment's i0 (and i1 = min(i0 + 1, n - 1)): shared
        self.first_i1 = i1[first].to(device)
        # (S, n) float64: each segment's weights summed, so a block's sum is Sy @ map @ Sx^T (``_Bounded.sums``)
        self.weight_sums = torch.zeros(len(starts), n, dtype=torch.float64, device="cpu").index_add_(
            0, torch.repeat_interleave(torch.arange(len(starts), device="cpu"), sizes),
            torch.zeros(side, n, dtype=torch.float64, device="cpu").scatter_add_(
                1, i0[:, None], (1 - (u - i0))[:, None]).scatter_add_(
                1, (i0 + 1).clamp(max=n - 1)[:, None], (u - i0)[:, None]))  # host: not every device has float64

    def lerp(self, t: torch.Tensor, dim: int, at: torch.Tensor | None = None) -> torch.Tensor:
        """``t`` resampled along ``dim`` to the working cells ``at`` (default all): t[i0] * w0 + t[i1] * w1."""
        i0, i1, w0, w1 = (self.i0, self.i1, self.w0, self.w1) if at is None else (
            self.i0[at], self.i1[at], self.w0[at], self.w1[at])
        shape = [1] * t.dim()
        shape[dim] = -1
        out = t.index_select(dim, i0).mul_(w0.view(shape))
        return out.add_(t.index_select(dim, i1).mul_(w1.view(shape)))


class _Blocks:
    """The working grid cut into blocks (segment x segment, at most BLOCK x BLOCK cells) inside which every value is
    a bilinear function of the two fracs, so a block's values lie between the least and the largest of its four
    corner values (up to rounding: ``MARGIN`` of the map's largest magnitude widens the bounds). The host path
    measures from these bounds and upsamples only the blocks that straddle a threshold: a block wholly above it
    counts its cells, one wholly below is skipped. Values are computed as in ``WorkingGrid.upsample``, bit for bit."""

    MARGIN = 4e-6  # >> the few float32 roundings of the two lerps (about 2 x 3 ulps of the largest magnitude)

    def __init__(self, side: int, h: int, w: int, device: str):
        self.side, self.y, self.x = side, _Axis(side, h, device), _Axis(side, w, device)
        self.T = len(self.x.sizes)
        self.size = (self.y.sizes[:, None] * self.x.sizes[None, :]).flatten()  # (NB,) cells per block
        host = (self.y.sizes_host[:, None] * self.x.sizes_host[None, :]).flatten()
        self.uniform = int(host.min()) == int(host.max())  # every block the same size (host)
        ys, xs = self.y.sizes_host, self.x.sizes_host
        even = bool((ys == ys[0]).all()) and bool((xs == xs[0]).all())
        self.even = (int(ys[0]), int(xs[0])) if even else None  # (rows, cols) of every block: a regular tiling
        self.block_cells = int(host[0])

    def chunk(self, maps: torch.Tensor) -> "_Bounded":
        cols = self.x.lerp(maps, 2)  # (M, h, G): the first lerp, for every working column
        corner = self.y.lerp(cols[:, :, self.x.corners], 1, self.y.corners)  # (M, 2S, 2T)
        M = maps.shape[0]
        c = corner.reshape(M, -1, 2, self.T, 2)
        a, b, d, e = c[:, :, 0, :, 0], c[:, :, 0, :, 1], c[:, :, 1, :, 0], c[:, :, 1, :, 1]
        lo = torch.minimum(torch.minimum(a, b), torch.minimum(d, e)).flatten(1)
        hi = torch.maximum(torch.maximum(a, b), torch.maximum(d, e)).flatten(1)
        margin = self.MARGIN * maps.abs().flatten(1).amax(1, keepdim=True) if maps.numel() else 0.0
        return _Bounded(self, maps, cols, lo - margin, hi + margin)

    def masks(self, maps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """(M, G*G) bool: the cells whose value reaches tau (M,)."""
        return self.chunk(maps).masks(tau)


class _Bounded:
    """One chunk of maps with its first lerp ``cols`` (M, h, G) and per-block bounds ``lo``, ``hi`` (M, NB)."""

    BINS = 256  # slices of each map's bracket [t_lo, t_hi] in ``kth``: the quickselect sees one slice's values

    def __init__(self, blocks: _Blocks, maps: torch.Tensor, cols: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        self.b, self.maps, self.cols, self.lo, self.hi = blocks, maps, cols, lo, hi

    def values(self, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The blocks ``sel`` (M, NB) bool marks, upsampled: map ids (P,), block ids (P,), values (P, cells per
        block) and which of them are cells (the rest repeat a cell to pad a short block; None on a regular tiling,
        where every value is a cell)."""
        m, blk = sel.nonzero(as_tuple=True)
        y, x = self.b.y, self.b.x
        s, t = blk // self.b.T, blk % self.b.T
        _, h, G = self.cols.shape
        if self.b.even:  # whole rows of blocks: one index per block, not per value
            by, bx = self.b.even
            runs = self.cols.reshape(-1, bx)  # (M * h * T, bx): each feature row's first lerp, block by block
            a = runs.index_select(0, (m * h + y.first_i0[s]) * self.b.T + t)  # (P, bx)
            b = runs.index_select(0, (m * h + y.first_i1[s]) * self.b.T + t)
            w0, w1 = y.w0.view(-1, by).index_select(0, s), y.w1.view(-1, by).index_select(0, s)  # (P, by)
            v = a[:, None, :] * w0[:, :, None]
            return m, blk, v.add_(b[:, None, :] * w1[:, :, None]).flatten(1), None  # (P, by * bx)
        rows, cols = y.cells[s], x.cells[t]  # (P, BLOCK) each
        flat = self.cols.reshape(-1)
        # a block's rows share i0 and i1: two feature rows of the first lerp, at the block's columns
        a = flat[((m * h + y.first_i0[s]) * G)[:, None] + cols]  # (P, BLOCK)
        b = flat[((m * h + y.first_i1[s]) * G)[:, None] + cols]
        v = a[:, None, :] * y.w0[rows][:, :, None] + b[:, None, :] * y.w1[rows][:, :, None]
        valid = y.valid[s][:, :, None] & x.valid[t][:, None, :]
        return m, blk, v.flatten(1), valid.flatten(1)

    def count(self, t: torch.Tensor, strict: bool = False, with_sum: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per map, the cells with value >= t (M,) (> t if ``strict``; t = +inf: none) and, if asked, their sum
        (float64). Blocks wholly past t count whole; only the straddling ones are upsampled (and the whole ones when
        a sum is asked: from the closed-form block sums)."""
        t2 = t[:, None]
        whole = self.lo > t2 if strict else self.lo >= t2
        part = ~whole & (self.hi > t2 if strict else self.hi >= t2)
        count = (whole * self.b.size).sum(1)
        m, _, v, valid = self.values(part)
        hit = v > t[m, None] if strict else v >= t[m, None]
        if valid is not None:
            hit &= valid
        count = count.index_add(0, m, hit.sum(1))
        if not with_sum:
            return count, None
        total = (self.sums() * whole).sum(1)
        return count, total.index_add(0, m, torch.where(hit, v, 0.0).sum(1, dtype=torch.float64))

    def kth(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``kth_largest`` from the bounds: tau lies in [t_lo, t_hi], the k-th largest of the blocks' lower and upper
        bounds counted with their sizes; blocks wholly above t_hi hold only cells above tau, blocks wholly below t_lo
        only cells below it, so tau is the (k - cells above)-th largest value of the blocks in between (the top-k sum
        in float64)."""
        M, device = k.shape[0], k.device
        inf = torch.full((M,), math.inf, device=device)
        has = k > 0
        if not bool(has.any()):
            return inf, torch.zeros(M, dtype=torch.float64, device=device), torch.zeros(M, dtype=torch.bool,
                                                                                         device=device)
        uniform = self.b.block_cells if self.b.uniform else 0
        t_lo, t_hi = _weighted_kth(torch.cat([self.lo, self.hi]), self.b.size, k.repeat(2), uniform).chunk(2)
        above = (self.lo > t_hi[:, None]) & has[:, None]
        between = ~above & (self.hi >= t_lo[:, None]) & has[:, None]
        m, _, v, valid = self.values(between)
        # each candidate value's slot: floor((v - t_lo) / (t_hi - t_lo) x BINS) clamped to [-1, BINS], a monotone
        # function of the value (equal values share a slot): -1 holds values below t_lo (and padding repeats), BINS
        # those above t_hi, and a value below t_lo that rounds into slot 0 is still below tau, which is >= t_lo. tau
        # is the rest-th largest in the first slot from the top whose cumulative count reaches rest (rest: k less
        # the cells above t_hi); only that slot's values go to the quickselect. (P, cells per block) arrays; slots
        # are offset by 1 + m x (BINS + 2) so one histogram counts every map's.
        width = self.BINS + 2
        span = (t_hi - t_lo).clamp_min(torch.finfo(torch.float32).tiny)
        slot = (v - t_lo[m, None]).div_(span[m, None]).mul_(self.BINS).floor_().clamp_(-1, self.BINS)
        if valid is not None:
            slot.masked_fill_(~valid, -1)
        slot = slot.int().add_((m * width + 1).int()[:, None])
        hist = torch.bincount(slot.flatten(), minlength=M * width).view(M, width)
        at_least = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # (M, BINS + 1): values in this slot or above it
        over = at_least[:, -1]  # above t_hi
        rest = k - (above * self.b.size).sum(1) - over  # >= 1 where k > 0: fewer than k cells exceed t_hi
        chosen = ((at_least[:, :-1] >= (rest + over)[:, None]).sum(1) - 1).clamp_(min=0)  # (M,) the slot with tau
        above_slice = at_least.gather(1, (chosen + 1)[:, None])[:, 0] - over
        chosen_m = (chosen + torch.arange(M, device=device) * width + 1).int()[m, None]  # offset like ``slot``
        sum_over = torch.zeros(M, dtype=torch.float64, device=device).index_add_(
            0, m, torch.where(slot > chosen_m, v, 0.0).sum(1, dtype=torch.float64))  # above t_hi or a higher slot
        rest_in = rest - above_slice  # >= 1 where k > 0
        at = (slot == chosen_m).flatten().nonzero()[:, 0]
        owner = m[at // v.shape[1]]  # nondecreasing: blocks come map by map
        v = v.flatten()[at]
        per_map = torch.bincount(owner, minlength=M)
        rank = torch.arange(len(owner), device=device) - (torch.cumsum(per_map, 0) - per_map)[owner]
        # one common rank for every row: row m gets (most - rest_in[m]) +inf cells in front, so its rest_in-th
        # largest is the most-th largest of the row; one quickselect (kthvalue) per row, no sort
        most = max(1, int(rest_in.max()))
        extra = torch.arange(most, device=device) < (most - rest_in)[:, None]  # (M, most)
        values = torch.full((M, int(per_map.max()) if len(owner) else 0), -math.inf, device=device)
        values[owner, rank] = v
        row = torch.cat([torch.where(extra, math.inf, -math.inf), values], 1)
        kth = torch.kthvalue(row, row.shape[1] - most + 1, dim=1).values  # the most-th largest
        greater = values > kth[:, None]
        n_greater = greater.sum(1)
        tied = (values == kth[:, None]).sum(1) + n_greater > rest_in
        total = (torch.where(greater, values, 0.0).sum(1, dtype=torch.float64) + (rest_in - n_greater) * kth.double()
                 + sum_over + (self.sums() * above).sum(1))
        return torch.where(has, kth, math.inf), torch.where(has, total, 0.0), has & tied

    def sums(self) -> torch.Tensor:
        """(M, NB) float64: each block's sum of values, Sy @ map @ Sx^T from the two lerps' weights (exact up to
        float64 rounding; the float32 values it stands for differ by their own rounding)."""
        M = self.lo.shape[0]
        sums = self.b.y.weight_sums @ self.maps.double().cpu() @ self.b.x.weight_sums.T
        return sums.reshape(M, -1).to(self.lo.device)

    def masks(self, tau: torch.Tensor) -> torch.Tensor:
        M, G = self.lo.shape[0], self.b.side
        whole = self.lo >= tau[:, None]
        part = ~whole & (self.hi >= tau[:, None])
        if self.b.even:  # each block's flag over its cells
            by, bx = self.b.even  # columns first (a short copy), then whole rows (long contiguous runs)
            rows = whole.view(M, -1, self.b.T, 1).expand(-1, -1, -1, bx).reshape(M, -1, 1, G)
            mask = rows.expand(-1, -1, by, -1).reshape(M, G * G)
        else:
            mask = whole.view(M, -1, self.b.T).repeat_interleave(self.b.y.sizes, 1, output_size=G).repeat_interleave(
                self.b.x.sizes, 2, output_size=G).reshape(M, G * G)
        m, blk, v, _ = self.values(part)
        s, t = blk // self.b.T, blk % self.b.T
        if self.b.even:  # one (block row, block column) pair per block; a block's rows are runs of bx cells
            by, bx = self.b.even
            mask.view(M, -1, by, self.b.T, bx)[m, s, :, t, :] = (v >= tau[m, None]).view(-1, by, bx)
            return mask
        at = (self.b.y.cells[s][:, :, None] * G + self.b.x.cells[t][:, None, :]).flatten(1)  # repeats: same cell
        mask.view(-1)[(m * (G * G))[:, None] + at] = v >= tau[m, None]  # one flat index: faster than two
        return mask


def _weighted_kth(bound: torch.Tensor, size: torch.Tensor, k: torch.Tensor, uniform: int) -> torch.Tensor:
    """(M,) the largest t among ``bound`` (M, NB) with at least k (M,) cells in blocks whose bound >= t (blocks of
    ``size`` (NB,) cells); k = 0 reads as 1. ``uniform`` > 0, every block's size (host int): the ceil(k / size)-th
    largest bound, one quickselect per row, no sort."""
    if uniform:
        j = (k.clamp_min(1) + uniform - 1) // uniform  # blocks needed, <= NB
        if len(j) and int(j.min()) == int(j.max()):  # one count for every row (a coverage): one quickselect
            return torch.kthvalue(bound, bound.shape[1] - int(j[0]) + 1, dim=1).values
        out = torch.empty(k.shape, dtype=bound.dtype, device=bound.device)
        for jj in torch.unique(j[k > 0] if bool((k > 0).any()) else j[:1]).tolist():  # typically one
            rows = (j == jj) | ((k <= 0) & (jj == int(j.max())))
            out[rows] = torch.kthvalue(bound[rows], bound.shape[1] - jj + 1, dim=1).values
        return out
    ordered, order = bound.sort(1, descending=True)
    seen = size[order].cumsum(1)
    at = torch.searchsorted(seen, k.clamp_min(1)[:, None]).clamp(max=bound.shape[1] - 1)
    return ordered.gather(1, at)[:, 0]


def _measure_blocks(maps: torch.Tensor, k: torch.Tensor, absolute: torch.Tensor, count_positive: torch.Tensor,
                    scale: torch.Tensor, blocks: _Blocks) -> Measured:
    """``_measure`` of the feature-grid maps (M, h, w) upsampled by ``blocks``, upsampling only the blocks a
    threshold crosses (``_Bounded``): the same wanted, tau, kept and positive; strength summed in float64. The host
    path (a host read per branch): used on the CPU."""
    M, N = maps.shape[0], blocks.side * blocks.side
    if M == 0 or not bool(torch.isfinite(maps).all()):
        return _measure(blocks.y.lerp(blocks.x.lerp(maps, 2), 1).flatten(1), k, absolute, count_positive, scale)
    c = blocks.chunk(maps)
    floor = torch.finfo(torch.float32).tiny
    inf = torch.full((M,), math.inf, device=maps.device)
    counted = k >= 0
    wanted, tau = k, inf
    if not bool(counted.all()):
        limit = torch.nextafter(absolute * scale.float().clamp_min(floor), inf)  # map / scale > T
        wanted = torch.where(counted, k, c.count(torch.where(counted, inf, limit))[0])
        tau = torch.where(counted, inf, limit)
    wanted = wanted.clamp(max=N)
    select = counted & (wanted > 0)
    kth, top_sum, tied = c.kth(torch.where(select, wanted, 0))
    tau = torch.where(select, kth, tau)
    tau = torch.where(wanted == 0, math.inf, tau)
    few = (wanted > 0) & (tau <= 0)  # fewer positive cells than wanted: keep every positive one
    tau = torch.where(few, floor, tau)
    direct = few | ~counted
    kept = torch.where(select, wanted, 0)
    recount = (direct | (select & tied)) & (wanted > 0)
    strength = top_sum
    if bool(recount.any()):
        n, total = c.count(torch.where(recount, tau, inf), with_sum=bool(direct.any()))
        kept = torch.where(recount, n, kept)
        if total is not None:
            strength = torch.where(direct, total, strength)
    finite_tau = tau.clamp(max=torch.finfo(torch.float32).max).double()
    strength = torch.where(direct, strength, strength + (kept - wanted) * finite_tau) / kept.clamp_min(1)
    strength = torch.where(kept > 0, strength, 0.0).float()
    positive = torch.full_like(kept, -1)
    if bool(count_positive.any()):
        positive = torch.where(count_positive, c.count(torch.where(count_positive, 0.0, inf), strict=True)[0], -1)
    return Measured(wanted, tau, kept, positive, strength)


KERNEL_MAPS_PER_THREAD = 8  # the C kernel shares maps among torch's intra-op threads, at least this many each


def _kernel_args(maps: torch.Tensor, blocks: _Blocks) -> tuple:
    """The C kernel's leading arguments: the maps (M, h, w) as contiguous float32, their shape, the grid's side and
    both axes."""
    M, h, w = maps.shape
    data = np.ascontiguousarray(maps.detach().float().numpy())
    return (data, M, h, w, blocks.side, *blocks.y.host, *blocks.x.host)


def _kernel_threads(M: int) -> int:
    """Threads for M maps: torch's intra-op threads (the worker's setting), each with enough maps to pay for one."""
    return max(1, min(torch.get_num_threads(), M // KERNEL_MAPS_PER_THREAD))


def _measure_compiled(maps: torch.Tensor, k: torch.Tensor, absolute: torch.Tensor, count_positive: torch.Tensor,
                      scale: torch.Tensor, blocks: _Blocks) -> Measured:
    """``_measure_blocks`` by the C kernel (``galore/_regions.c``) for finite CPU maps (M, h, w), M >= 1: every cell
    computed as ``WorkingGrid.upsample`` does, bit for bit, tau bracketed from the corner bounds of tiles of at most
    8 x 8 cells and one quickselect over a slice of the straddling tiles' cells; strengths summed in float64; the
    maps shared among threads (``_kernel_threads``)."""
    M = maps.shape[0]
    floor = torch.finfo(torch.float32).tiny
    limit = torch.nextafter(absolute.float() * scale.float().clamp_min(floor),
                            torch.tensor(math.inf, device="cpu"))  # map / scale > T
    out = {"wanted": np.empty(M, np.int64), "tau": np.empty(M, np.float32), "kept": np.empty(M, np.int64),
           "positive": np.empty(M, np.int64), "strength": np.empty(M, np.float32)}
    _kernel.measure(*_kernel_args(maps, blocks), np.ascontiguousarray(k.numpy(), dtype=np.int64),
                    np.ascontiguousarray(limit.numpy()), np.ascontiguousarray(count_positive.numpy(), dtype=np.uint8),
                    out["wanted"], out["tau"], out["kept"], out["positive"], out["strength"], _kernel_threads(M))
    return Measured(*(torch.from_numpy(out[f]) for f in ("wanted", "tau", "kept", "positive", "strength")))


def _masks_compiled(maps: torch.Tensor, tau: torch.Tensor, blocks: _Blocks) -> torch.Tensor:
    """(M, G, G) bool: ``WorkingGrid.cell_masks`` by the C kernel, for finite CPU maps."""
    M, G = maps.shape[0], blocks.side
    out = torch.empty(M, G, G, dtype=torch.bool, device="cpu")
    if M:
        _kernel.masks(*_kernel_args(maps, blocks), np.ascontiguousarray(tau.float().numpy()), out.numpy(),
                      _kernel_threads(M))
    return out


def _measure(values: torch.Tensor, k: torch.Tensor, absolute: torch.Tensor, count_positive: torch.Tensor,
             scale: torch.Tensor) -> Measured:
    """values (M, N); k (M,) cells wanted, -1 where ``absolute`` T applies to values / ``scale`` (M,).

    A cell is kept when its value reaches tau: the k-th largest value for a count, just above T x scale for an
    absolute threshold, the smallest positive value when fewer cells than wanted are positive. For counts the
    strength comes from the top-k sum (cells tied at tau add tau each), so a map costs one selection, and a
    counting pass only when a cell outside its top k ties with tau; ``positive`` is counted only where
    ``count_positive`` asks (-1 elsewhere)."""
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
