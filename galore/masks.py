"""Masks on the working grid, their exact image in ORIGINAL pixels, and their wire encodings. numpy only.

A region is thresholded on a bounded working grid of G x G cells covering the centre crop (regions.py). Each
original pixel takes the cell its centre falls in (``CellFrame``), so the mask in original pixels, its pixel count,
its box and its run-length encoding all follow from the (G, G) cell mask and two index vectors, at a cost that
grows with G^2 + W0, never with H0 x W0 (only ``expand`` builds the full array, for callers that want it).

Encodings (see explainer.proto ``Mask``):
  * COCO RLE: column-major run lengths starting with a run of 0s, as ``pycocotools.mask`` uses, compressed into
    COCO's ASCII ``counts`` string (``coco_string``), decodable by ``pycocotools.mask.decode``.
  * bits: row-major, most significant bit first (``numpy.packbits``).

Example:
    >>> import numpy as np
    >>> frame = CellFrame(rows=np.array([-1, 0, 0, 1]), cols=np.array([0, 1, 1]), side=2)   # 4 x 3 image
    >>> cells = np.array([[False, True], [False, False]])
    >>> frame.expand(cells).astype(int).tolist()
    [[0, 0, 0], [0, 1, 1], [0, 1, 1], [0, 0, 0]]
    >>> frame.pixel_count(cells), frame.bbox(cells), rle_counts(cells, frame).tolist()
    (4, (1, 1, 3, 3), [5, 2, 2, 2, 1])
    >>> bool((decode_rle(rle_counts(cells, frame), 4, 3) == frame.expand(cells)).all())
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class CellFrame:
    """Which working-grid cell each original pixel falls in. rows (H0,) / cols (W0,) hold cell indices in
    [0, side), or -1 for pixels outside the centre crop; both are non-decreasing inside the crop."""

    rows: np.ndarray
    cols: np.ndarray
    side: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    @cached_property
    def _row_axis(self) -> "_Axis":
        return _Axis(self.rows, self.side)

    @cached_property
    def _col_axis(self) -> "_Axis":
        return _Axis(self.cols, self.side)

    @cached_property
    def cell_pixels(self) -> np.ndarray:
        """(G, G) int64: original pixels per cell (0 for cells no pixel centre falls in)."""
        return np.outer(self._row_axis.counts, self._col_axis.counts)

    @cached_property
    def _visible(self) -> np.ndarray:
        """(G, G) bool: cells some original pixel centre falls in."""
        return self.cell_pixels > 0

    @cached_property
    def _all_visible(self) -> bool:
        return bool(self._visible.all())

    def pixel_count(self, cells: np.ndarray) -> int:
        return int(self.cell_pixels[cells].sum())

    def bbox(self, cells: np.ndarray) -> tuple[int, int, int, int] | None:
        """Half-open (x0, y0, x1, y1) in original pixels of the pixels the mask covers; None when it covers none."""
        seen = cells & (self.cell_pixels > 0)
        ys, xs = np.nonzero(seen.any(1))[0], np.nonzero(seen.any(0))[0]
        if ys.size == 0:
            return None
        r, c = self._row_axis, self._col_axis
        return int(c.first[xs[0]]), int(r.first[ys[0]]), int(c.last[xs[-1]]) + 1, int(r.last[ys[-1]]) + 1

    def summaries(self, cells: np.ndarray) -> tuple[list[int], list[tuple[int, int, int, int] | None]]:
        """``pixel_count`` and ``bbox`` of many masks (N, G, G) at once: two matrix products and two reductions."""
        seen = cells if self._all_visible else cells & self._visible[None]  # (N, G, G)
        # per cell row in float32 (exact: at most the image's width), then across rows in float64
        counts = (seen.astype(np.float32) @ self._col_axis.counts.astype(np.float32)).astype(np.float64) @ \
            self._row_axis.counts
        rows, cols = seen.any(2), seen.any(1)  # (N, G) each
        G = self.side
        y0, x0 = rows.argmax(1), cols.argmax(1)
        y1, x1 = G - 1 - rows[:, ::-1].argmax(1), G - 1 - cols[:, ::-1].argmax(1)
        r, c = self._row_axis, self._col_axis
        boxes = [(int(c.first[a]), int(r.first[b]), int(c.last[d]) + 1, int(r.last[e]) + 1) if any_ else None
                 for a, b, d, e, any_ in zip(x0, y0, x1, y1, rows.any(1))]
        return [int(round(n)) for n in counts], boxes

    def expand(self, cells: np.ndarray) -> np.ndarray:
        """(G, G) bool cells -> (H0, W0) bool mask in original pixels (pixels outside the crop are False)."""
        padded = np.zeros((self.side + 1, self.side + 1), dtype=bool)  # index -1 -> the all-False last row/col
        padded[:-1, :-1] = cells
        return padded[self.rows[:, None], self.cols[None, :]]


class _Axis:
    """One axis of a CellFrame: pixels per cell and the first / last original pixel of each cell."""

    def __init__(self, index: np.ndarray, side: int):
        inside = np.nonzero(index >= 0)[0]
        self.counts = np.bincount(index[inside], minlength=side)  # (G,)
        self.first = np.full(side, -1, dtype=np.int64)
        self.last = np.full(side, -1, dtype=np.int64)
        self.first[index[inside][::-1]] = inside[::-1]  # the smallest pixel index wins
        self.last[index[inside]] = inside  # the largest wins


def rle_counts(cells: np.ndarray, frame: CellFrame) -> np.ndarray:
    """COCO run lengths (column-major, first run = 0s) of ``frame.expand(cells)`` without building it.

    Within one original column the pattern changes only at cell boundaries, so each grid column j gives its
    change rows P_j from the cell mask; original column x contributes x * H0 + P_{cols[x]}. A run ending at the
    bottom of a column and one starting at the top of the next cancel (the two equal change points)."""
    H0, W0 = frame.shape
    r = frame._row_axis
    visible = np.nonzero(r.counts > 0)[0]  # cell rows some pixel centre falls in, top to bottom
    if visible.size == 0:
        return np.array([H0 * W0], dtype=np.int64)
    y_at = np.append(r.first[visible], r.last[visible[-1]] + 1)  # (Gv + 1,) original row where each starts
    column = cells[visible].astype(np.int8)  # (Gv, G)
    change = np.diff(column, axis=0, prepend=0, append=0).T  # (G, Gv + 1): != 0 where the value flips
    j_idx, t_idx = np.nonzero(change)  # sorted by grid column, then row
    per_col = np.bincount(j_idx, minlength=frame.side)  # change points per grid column
    first_point = np.cumsum(per_col) - per_col
    xs = np.nonzero(frame.cols >= 0)[0]
    n = per_col[frame.cols[xs]]  # change points of each original column
    total = int(n.sum())
    if total == 0:
        return np.array([H0 * W0], dtype=np.int64)
    owner = np.repeat(np.arange(xs.size), n)  # which original column each point belongs to
    within = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    points = xs[owner].astype(np.int64) * H0 + y_at[t_idx[first_point[frame.cols[xs]][owner] + within]]
    keep = np.ones(total, dtype=bool)
    dup = np.nonzero(points[1:] == points[:-1])[0]  # end of one column's run == start of the next one's
    keep[dup], keep[dup + 1] = False, False
    return _runs(points[keep], H0 * W0)


def rle_from_mask(mask: np.ndarray) -> np.ndarray:
    """COCO run lengths of a full (H, W) bool mask: the O(H x W) reference for ``rle_counts``."""
    flat = np.asarray(mask, dtype=np.int8).T.reshape(-1)  # column-major
    return _runs(np.nonzero(np.diff(flat, prepend=0, append=0))[0], flat.size)


def _runs(points: np.ndarray, size: int) -> np.ndarray:
    """Sorted change points in [0, size] -> run lengths; a mask ending in 1s has no empty final run (as COCO)."""
    counts = np.diff(np.concatenate(([0], points, [size]))).astype(np.int64)
    return counts[:-1] if counts.size > 1 and counts[-1] == 0 else counts


def decode_rle(counts: np.ndarray, height: int, width: int) -> np.ndarray:
    """Column-major run lengths (first run = 0s) -> (height, width) bool."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"run lengths sum to {int(counts.sum())}, expected {height} x {width}")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T


def coco_string(counts: np.ndarray) -> bytes:
    """Run lengths -> COCO's compressed ``counts`` string: each count (minus the count two before it, from the
    fourth on) as 5-bit groups, low first, each + 48, bit 0x20 set when another group follows."""
    counts = np.asarray(counts, dtype=np.int64)
    x = counts.copy()
    x[3:] -= counts[1:-2]
    groups = np.zeros((x.size, 7), dtype=np.int64)  # a 32-bit signed value needs at most 7 groups
    present = np.zeros((x.size, 7), dtype=bool)
    live = np.ones(x.size, dtype=bool)
    for k in range(7):
        c = x & 0x1F
        x = x >> 5  # arithmetic shift: negatives stay negative
        more = np.where(c & 0x10, x != -1, x != 0)
        groups[:, k], present[:, k] = c | (more * 0x20), live
        live = live & more
    return (groups[present] + 48).astype(np.uint8).tobytes()


def coco_counts(string: bytes) -> np.ndarray:
    """Inverse of ``coco_string``."""
    b = np.frombuffer(bytes(string), dtype=np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (b < 0).any() or (b > 63).any() or b[-1] & 0x20:
        raise ValueError("not a COCO RLE counts string")
    ends = np.nonzero((b & 0x20) == 0)[0]
    starts = np.concatenate(([0], ends[:-1] + 1))
    k = np.arange(b.size) - np.repeat(starts, ends - starts + 1)
    x = np.add.reduceat((b & 0x1F) << (5 * k), starts)
    negative = (b[ends] & 0x10) != 0
    x = np.where(negative, x - (1 << (5 * (k[ends] + 1))), x)
    counts = x.copy()
    counts[2::2] = np.cumsum(x[2::2])
    counts[1::2] = np.cumsum(x[1::2])
    return counts


def pack_bits(mask: np.ndarray) -> bytes:
    """(H, W) bool -> row-major bits, most significant first (numpy.packbits)."""
    return np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes()


def unpack_bits(bits: bytes, height: int, width: int) -> np.ndarray:
    if len(bits) != (height * width + 7) // 8:
        raise ValueError(f"expected {(height * width + 7) // 8} bytes for {width}x{height} pixels, got {len(bits)}")
    return np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=height * width).reshape(height, width) == 1


def decode_wire(height: int, width: int, coco_rle: bytes | None = None, bits: bytes | None = None) -> np.ndarray:
    """A wire Mask's payload (exactly one of the two encodings) -> (height, width) bool; ValueError if malformed."""
    if coco_rle is not None:
        return decode_rle(coco_counts(coco_rle), height, width)
    if bits is not None:
        return unpack_bits(bits, height, width)
    raise ValueError("mask has no payload")
