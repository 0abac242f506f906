"""Reference regions the working grid is checked against (tests, ``benchmarks/working_grid_fidelity.py``): one
image's maps thresholded each on its own into Regions, and the full-resolution reference that upsamples a map to
every original pixel. Not used by the engine, which measures a whole batch at once (``galore.kinds.measure_batch``)."""
from __future__ import annotations

import torch

from galore.options import Threshold
from galore.preprocess import Geometry, upsample_to_original
from galore.regions import Rule, WorkingGrid
from galore.results import Region


def regions(maps: torch.Tensor, geo: Geometry, threshold: Threshold, grid: WorkingGrid | None = None) -> list:
    """Feature-grid maps (M, h, w) of one image -> M Regions in original pixels, each thresholded on its own
    (default grid: one cell per crop pixel)."""
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
