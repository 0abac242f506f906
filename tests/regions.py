"""Engine Regions from plain masks, for tests of the wire encodings."""
from __future__ import annotations

import numpy as np
import torch

from galore.masks import CellFrame
from galore.results import Region


def region_of(mask: np.ndarray) -> Region:
    """A Region whose working grid has one cell per original pixel, so its mask is exactly ``mask`` (H, W)."""
    height, width = mask.shape
    frame = CellFrame(np.arange(height), np.arange(width), max(height, width))
    cells = np.zeros((frame.side, frame.side), dtype=bool)
    cells[:height, :width] = mask
    return Region.of(cells, frame, torch.zeros(1, 1), 1.0)
