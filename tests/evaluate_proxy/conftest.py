"""A CUB-200-2011-format fixture of real photos (skimage.data) with hand-placed parts and six attributes, and a
tiny hand-checkable engine for it.

Classes (CUB ids 1..3, model classes 0..2) A, B, C; two photos each, the first of each class in the training split.
Parts: 1 beak, 2 tail, 3 throat. Attributes (group::value): bill colour black/yellow, tail shape forked/rounded,
throat colour white/red. Every photo is resized to 128 x 96 (W x H), so the model's 8 x 8 centre crop covers
x in [16, 112), y in [0, 96): 12 original pixels per crop pixel, the crop's left half is x < 64.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from galore import Engine
from galore.preprocess import Preprocess

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "camera")  # image ids 1..6
CLASS_OF = (1, 1, 2, 2, 3, 3)  # CUB class id of each image
TRAIN = (1, 0, 1, 0, 1, 0)
PARTS = ("beak", "tail", "throat")
ATTRIBUTES = ("has_bill_color::black", "has_bill_color::yellow", "has_tail_shape::forked",
              "has_tail_shape::rounded", "has_throat_color::white", "has_throat_color::red")
# Per image, the attributes present (ids 1..6).  Class A: black bill, forked tail, throat white in one photo and
# red in the other; B: black bill, rounded tail, white throat; C: yellow bill, rounded tail, red throat.
PRESENT = ({1, 3, 5}, {1, 3, 6}, {1, 4, 5}, {1, 4, 5}, {2, 4, 6}, {2, 4, 6})
# Part points (x, y, visible) per image, in the 128 x 96 pixels. Beak and throat in the crop's left half, tail in
# its right half; image 4's tail is not visible; image 6's beak lies left of the crop (x < 16), never seen.
LOCS = {
    1: ((30, 20, 1), (100, 50, 1), (40, 60, 1)),
    2: ((30, 20, 1), (100, 50, 1), (40, 60, 1)),
    3: ((20, 10, 1), (90, 80, 1), (50, 40, 1)),
    4: ((30, 20, 1), (0, 0, 0), (40, 60, 1)),
    5: ((30, 20, 1), (100, 50, 1), (40, 60, 1)),
    6: ((5, 20, 1), (100, 50, 1), (40, 60, 1)),
}
SIZE = (128, 96)


def photo(name: str) -> np.ndarray:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return np.ascontiguousarray(arr[..., :3])


def write_cub(root: Path) -> Path:
    """Writes the fixture in the CUB-200-2011 layout under ``root`` and returns ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "parts").mkdir()
    (root / "attributes").mkdir()
    images, labels, split, locs, attr = [], [], [], [], []
    for i, name in enumerate(PHOTOS, 1):
        rel = f"{CLASS_OF[i - 1]:03d}.class/{name}.png"
        (root / "images" / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(photo(name)).resize(SIZE, Image.BILINEAR).save(root / "images" / rel)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {CLASS_OF[i - 1]}")
        split.append(f"{i} {TRAIN[i - 1]}")
        locs += [f"{i} {k} {x}.0 {y}.0 {v}" for k, (x, y, v) in enumerate(LOCS[i], 1)]
        attr += [f"{i} {a} {int(a in PRESENT[i - 1])} 3 1.5" for a in range(1, len(ATTRIBUTES) + 1)]
    for path, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("parts/part_locs.txt", locs),
                        ("attributes/image_attribute_labels.txt", attr),
                        ("parts/parts.txt", [f"{k} {p}" for k, p in enumerate(PARTS, 1)]),
                        ("attributes.txt", [f"{a} {n}" for a, n in enumerate(ATTRIBUTES, 1)]),
                        ("classes.txt", ["1 001.A", "2 002.B", "3 003.C"])):
        (root / path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory) -> Path:
    return write_cub(tmp_path_factory.mktemp("cub"))


# An 8 x 8 crop, no normalisation; F = gray + 1 on the crop's own 8 x 8 grid (so the working grid of 8 x 8 cells IS
# the feature grid: no interpolation). Every class weighs every pixel 0.001, and 0.011 on its support: A the crop's
# left half, B its top half, C its bottom-right quarter; the biases make A the prediction and B the runner-up for
# any photo.
PREP = Preprocess(resize=8, crop=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def support() -> torch.Tensor:
    w = torch.zeros(3, 8, 8)
    w[0, :, :4] = 1  # A: left half
    w[1, :4, :] = 1  # B: top half
    w[2, 4:, 4:] = 1  # C: bottom-right quarter
    return w


def tiny_cub_model() -> nn.Module:
    conv = nn.Conv2d(3, 1, 1)
    conv.weight.data.fill_(1 / 3)
    conv.bias.data.fill_(1.0)
    head = nn.Linear(64, 3)
    head.weight.data.copy_(0.001 + 0.01 * support().flatten(1))  # every attribution > 0 (F > 0)
    head.bias.data.copy_(torch.tensor([3.0, 1.5, 0.0]))
    return nn.Sequential(conv, nn.Flatten(), head).eval()


@pytest.fixture(scope="session")
def cub_engine() -> Engine:
    return Engine.from_module("tiny-cub", tiny_cub_model(), ["A", "B", "C"], PREP, layer="0", device="cpu")
