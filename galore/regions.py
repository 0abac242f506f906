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
from .preprocess import Geometry, upsample_to_original
from .results import Region


def _upsample(maps: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, h, w) -> values (M, H0, W0) with 0 outside the crop, inside (H0, W0)."""
    values, inside = zip(*(upsample_to_original(m, geo) for m in maps))
    return torch.stack(values), inside[0]


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
    H0, W0 = values.shape
    flat = values.flatten()
    mask = torch.zeros(H0 * W0, dtype=torch.bool, device=values.device)
    if count > 0:
        top = torch.topk(flat, count, sorted=False)
        mask[top.indices] = True
        strength = float(top.values.mean())
    else:
        strength = 0.0
    mask = mask.reshape(H0, W0)
    bbox = None
    if count > 0:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        bbox = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return Region(mask=mask.cpu(), heatmap=grid_map.detach().float().cpu(), strength=strength,
                  pixel_count=int(count), bbox=bbox)


def regions(maps: torch.Tensor, geo: Geometry, threshold: Threshold) -> list[Region]:
    """Feature-grid maps (M, h, w) of one image -> M regions in original pixels, each thresholded on its own."""
    values, inside = _upsample(maps, geo)
    counts = _keep_counts(values, inside, threshold)
    return [_cut(v, int(k), m) for v, k, m in zip(values, counts, maps)]


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
