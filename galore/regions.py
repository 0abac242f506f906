"""Heatmap -> region: bilinear upsampling to the ORIGINAL image, thresholding (eqs. 6, 8, 9), strength (eq. 15).

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

import torch

from .options import Threshold
from .preprocess import Geometry, interpolation_weights, upsample_to_original
from .results import Region


def _upsample(maps: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, h, w) -> values (M, H0, W0) with 0 outside the crop, inside (H0, W0)."""
    return upsample_to_original(maps, geo)


def _keep_counts(values: torch.Tensor, inside: torch.Tensor, threshold: Threshold) -> torch.Tensor:
    """How many pixels each map's mask keeps: (M,) long. Only positive pixels inside the crop can be kept."""
    positive = (values > 0).flatten(1).sum(1)  # (M,)
    if threshold.coverage is not None:
        wanted = torch.full_like(positive, int(round(threshold.coverage * int(inside.sum()))))
    else:
        peak = values.flatten(1).amax(1).clamp_min(torch.finfo(values.dtype).tiny)  # (M,)
        wanted = (values / peak[:, None, None] > threshold.absolute).flatten(1).sum(1)
    return torch.minimum(wanted, positive)


def _cut(values: torch.Tensor, count: int, grid_map: torch.Tensor) -> Region:
    """The ``count`` largest pixels of values (H0, W0) as a Region with eq. (15) strength."""
    top = torch.topk(values.flatten(), count, sorted=False) if count > 0 else None
    return _region(values.shape, top.indices if top else None, float(top.values.mean()) if top else 0.0, grid_map)


def _region(shape: torch.Size, indices: torch.Tensor | None, strength: float, grid_map: torch.Tensor) -> Region:
    H0, W0 = shape
    mask = torch.zeros(H0 * W0, dtype=torch.bool, device=grid_map.device)
    bbox = None
    if indices is not None and indices.numel() > 0:
        mask[indices] = True
        rows, cols = indices // W0, indices % W0
        bbox = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return Region(mask=mask.reshape(H0, W0).cpu(), heatmap=grid_map.detach().float().cpu(), strength=strength,
                  pixel_count=0 if indices is None else int(indices.numel()), bbox=bbox)


class Measured:
    """Maps (M, h, w) of one image upsampled and thresholded together: ``strengths`` (M,) for every map (eq. 15),
    masks built only for the maps asked for with ``region(m)`` (deliberation ranks many, returns few).

    Only the crop's window of the original image is computed: pixels outside it are 0 and never selected.
    """

    def __init__(self, maps: torch.Tensor, geo: Geometry, threshold: Threshold):
        ry, rx = interpolation_weights(geo, *maps.shape[-2:], maps.device)
        rows, cols = (ry.sum(1) > 0).nonzero()[:, 0], (rx.sum(1) > 0).nonzero()[:, 0]
        y0, x0 = int(rows[0]), int(cols[0])
        values = ry[rows] @ maps.float() @ rx[cols].T  # (M, Hc, Wc): the crop's window
        inside = torch.ones(values.shape[1:], dtype=torch.bool, device=maps.device)
        self.maps, self.shape, self.width = maps, (geo.height, geo.width), geo.width
        self._window = (y0, x0, values.shape[2])
        self.counts = _keep_counts(values, inside, threshold).tolist()  # (M,)
        k = max(self.counts)
        self._top = torch.topk(values.flatten(1), k, dim=1, sorted=False) if k > 0 else None  # (M, k)
        self.strengths = [self._selected(m)[1] for m in range(len(maps))]

    def _selected(self, m: int) -> tuple[torch.Tensor | None, float]:
        """Window indices of map m's ``counts[m]`` largest pixels and their mean (eq. 15)."""
        c = self.counts[m]
        if c == 0:
            return None, 0.0
        values, indices = self._top.values[m], self._top.indices[m]
        if c < values.numel():  # a map with fewer kept pixels than the largest count: its c best of the k
            best = torch.topk(values, c, sorted=False).indices
            values, indices = values[best], indices[best]
        return indices, float(values.mean())

    def region(self, m: int) -> Region:
        indices, strength = self._selected(m)
        if indices is not None:
            y0, x0, wc = self._window
            indices = (indices // wc + y0) * self.width + indices % wc + x0  # window -> original flat index
        return _region(self.shape, indices, strength, self.maps[m])


def regions(maps: torch.Tensor, geo: Geometry, threshold: Threshold) -> list[Region]:
    """Feature-grid maps (M, h, w) of one image -> M regions in original pixels, each thresholded on its own."""
    measured = Measured(maps, geo, threshold)
    return [measured.region(m) for m in range(len(maps))]


def equal_size_regions(sides: list[tuple[torch.Tensor, Geometry]], threshold: Threshold) -> list[Region]:
    """Counterfactual sides [(map (h, w), geometry)], query first -> regions of EQUAL pixel count (note under
    eq. 16): the threshold fixes the count on the query side (coverage: of the smallest crop) and every side keeps
    that many of its largest pixels, fewer only if a side has fewer positive pixels. A side without any positive
    pixel (no discriminant evidence at all) gets an empty mask and strength 0 instead of emptying the others."""
    upsampled = [_upsample(m[None], g) for m, g in sides]
    if threshold.coverage is not None:
        smallest = min(int(inside.sum()) for _, inside in upsampled)
        count = int(round(threshold.coverage * smallest))
    else:
        values, inside = upsampled[0]
        count = int(_keep_counts(values, inside, threshold)[0])
    positives = [int((values > 0).sum()) for values, _ in upsampled]
    count = min([count] + [p for p in positives if p > 0])
    return [_cut(values[0], count if p > 0 else 0, m) for (values, _), (m, _), p in zip(upsampled, sides, positives)]
