"""Heatmap -> region: bilinear upsampling to the ORIGINAL image, thresholding (eqs. 6, 8, 9), strength (eq. 15).

Only the crop's window of the original image is ever computed: pixels outside the crop the model saw are 0 and
never selected.

Example:
    >>> import torch
    >>> from galore.preprocess import Preprocess
    >>> _, geo = Preprocess(resize=224)(torch.zeros(3, 224, 224, dtype=torch.uint8))
    >>> maps = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])          # (M, h, w): right-top cell salient
    >>> (r,) = regions(maps, geo, Threshold(coverage=0.25))
    >>> r.pixel_count, r.bbox[0] >= 56, r.bbox[3] <= 168
    (12544, True, True)
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .options import Threshold
from .preprocess import Geometry, interpolation_weights
from .results import Region


@lru_cache(maxsize=256)
def _window_weights(geo: Geometry, h: int, w: int, device: str) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Rows of the (H0, h) / (W0, w) bilinear weights inside the crop, and the window's top-left (y0, x0).
    Cached: bank exemplars and repeated image sizes reuse them."""
    ry, rx = interpolation_weights(geo, h, w, torch.device(device))
    rows, cols = (ry.sum(1) > 0).nonzero()[:, 0], (rx.sum(1) > 0).nonzero()[:, 0]
    return ry[rows], rx[cols], int(rows[0]), int(cols[0])


class _Window:
    """Maps (M, h, w) upsampled over the crop's window of one original image: values (M, Hc, Wc)."""

    def __init__(self, maps: torch.Tensor, geo: Geometry):
        ry, rx, self.y0, self.x0 = _window_weights(geo, *maps.shape[-2:], str(maps.device))
        self.values = ry @ maps.float() @ rx.T  # (M, Hc, Wc)
        self.maps, self.shape = maps, (geo.height, geo.width)
        self.positives = (self.values > 0).flatten(1).sum(1).tolist()  # (M,)

    @property
    def pixels(self) -> int:
        return self.values.shape[1] * self.values.shape[2]

    def counts(self, threshold: Threshold) -> list[int]:
        """How many pixels each map's mask keeps; only positive pixels can be kept."""
        if threshold.coverage is not None:
            wanted = [int(round(threshold.coverage * self.pixels))] * len(self.positives)
        else:
            peak = self.values.flatten(1).amax(1).clamp_min(torch.finfo(self.values.dtype).tiny)  # (M,)
            wanted = (self.values / peak[:, None, None] > threshold.absolute).flatten(1).sum(1).tolist()
        return [min(w, p) for w, p in zip(wanted, self.positives)]

    def region(self, m: int, indices: torch.Tensor | None, strength: float) -> Region:
        """Map m's mask from window indices of its kept pixels."""
        H0, W0 = self.shape
        mask = torch.zeros(H0 * W0, dtype=torch.bool, device=self.values.device)
        bbox = None
        if indices is not None and indices.numel() > 0:
            Wc = self.values.shape[2]
            rows, cols = indices // Wc + self.y0, indices % Wc + self.x0  # window -> original pixels
            mask[rows * W0 + cols] = True
            bbox = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        return Region(mask=mask.reshape(H0, W0).cpu(), heatmap=self.maps[m].detach().float().cpu(),
                      strength=strength, pixel_count=0 if indices is None else int(indices.numel()), bbox=bbox)

    def cut(self, m: int, count: int) -> Region:
        """Map m's ``count`` largest pixels as a Region with eq. (15) strength."""
        if count <= 0:
            return self.region(m, None, 0.0)
        top = torch.topk(self.values[m].flatten(), count, sorted=False)
        return self.region(m, top.indices, float(top.values.mean()))


class Measured:
    """Maps (M, h, w) of one image thresholded together: ``strengths`` for every map (eq. 15), masks built only
    for the maps asked for with ``region(m)`` (deliberation ranks many, returns few)."""

    def __init__(self, maps: torch.Tensor, geo: Geometry, threshold: Threshold):
        self._win = _Window(maps, geo)
        self.counts = self._win.counts(threshold)
        k = max(self.counts)
        self._top = torch.topk(self._win.values.flatten(1), k, dim=1, sorted=False) if k > 0 else None  # (M, k)
        self.strengths = [self._selected(m)[1] for m in range(len(maps))]

    def _selected(self, m: int) -> tuple[torch.Tensor | None, float]:
        """Window indices of map m's ``counts[m]`` largest pixels and their mean (eq. 15)."""
        c = self.counts[m]
        if c == 0:
            return None, 0.0
        values, indices = self._top.values[m], self._top.indices[m]
        if c < values.numel():  # fewer kept pixels than the largest count: its c best of the k
            best = torch.topk(values, c, sorted=False).indices
            values, indices = values[best], indices[best]
        return indices, float(values.mean())

    def region(self, m: int) -> Region:
        return self._win.region(m, *self._selected(m))


def regions(maps: torch.Tensor, geo: Geometry, threshold: Threshold) -> list[Region]:
    """Feature-grid maps (M, h, w) of one image -> M regions in original pixels, each thresholded on its own."""
    measured = Measured(maps, geo, threshold)
    return [measured.region(m) for m in range(len(maps))]


def equal_size_regions(sides: list[tuple[torch.Tensor, Geometry]], threshold: Threshold) -> list[Region]:
    """Counterfactual sides [(map (h, w), geometry)], query first -> regions of EQUAL pixel count (note under
    eq. 16): the threshold fixes the count on the query side (coverage: of the smallest crop) and every side keeps
    that many of its largest pixels, fewer only if a side has fewer positive pixels. A side without any positive
    pixel (no discriminant evidence at all) gets an empty mask and strength 0 instead of emptying the others."""
    windows = [_Window(m[None], g) for m, g in sides]
    if threshold.coverage is not None:
        count = int(round(threshold.coverage * min(win.pixels for win in windows)))
    else:
        count = windows[0].counts(threshold)[0]
    positives = [win.positives[0] for win in windows]
    count = min([count] + [p for p in positives if p > 0])
    return [win.cut(0, count if p > 0 else 0) for win, p in zip(windows, positives)]
