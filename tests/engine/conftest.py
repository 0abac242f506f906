"""Tiny hand-checkable models and real photos for the engine tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from galore import Engine
from galore.preprocess import Preprocess

# x in [0, 1] on a 4 x 4 input, no resize: pixel values map straight into F (exact float sums).
IDENTITY_PREP = Preprocess(resize=4, crop=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
W = torch.tensor([[1.0, 2.0, 3.0, 4.0],  # class 0
                  [4.0, 3.0, 2.0, 1.0],  # class 1
                  [0.5, -1.0, 2.0, 0.0]])  # class 2


def gray_pool_model(grid: int = 2, weights: torch.Tensor = W) -> nn.Module:
    """image -> gray (mean of RGB) -> F = average over a grid x grid partition (B, 1, grid, grid) -> linear head."""
    conv = nn.Conv2d(3, 1, 1, bias=False)
    conv.weight.data.fill_(1 / 3)
    linear = nn.Linear(grid * grid, weights.shape[0], bias=False)
    linear.weight.data.copy_(weights)
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(grid), nn.Flatten(), linear).eval()


def quadrant_image(values=((0.2, 0.4), (0.6, 0.8)), size: int = 4) -> torch.Tensor:
    """(3, size, size) uint8 whose 2 x 2 quadrant grays are ``values``."""
    img = torch.zeros(3, size, size, dtype=torch.uint8)
    half = size // 2
    for i in range(2):
        for j in range(2):
            img[:, i * half:(i + 1) * half, j * half:(j + 1) * half] = round(values[i][j] * 255)
    return img


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                              device="cpu")


@pytest.fixture(scope="session")
def lite_engine() -> Engine:
    return Engine.default(device="cpu")


def photo(name: str) -> torch.Tensor:
    import skimage.data
    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()
