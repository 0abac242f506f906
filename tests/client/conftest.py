"""Hand-built explanations with known masks, so tests can say exactly which pixels must be highlighted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galore_client.results import (Attributive, ClassRef, ClassScore, Counterfactual, ExemplarSide, Explanation,
                                   Insecurity, Region)

WIDTH, HEIGHT = 120, 80  # original image size used by the hand-built explanations


def box_mask(x0: int, y0: int, x1: int, y1: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def gray_image() -> np.ndarray:
    """A uniform (HEIGHT, WIDTH, 3) image of value 200: highlighted pixels keep 200, dimmed ones drop to 70."""
    return np.full((HEIGHT, WIDTH, 3), 200, dtype=np.uint8)


@pytest.fixture
def explanation() -> Explanation:
    tabby, tiger, egypt, lynx = ClassRef(281, "tabby"), ClassRef(282, "tiger cat"), ClassRef(285, "Egyptian cat"), \
        ClassRef(287, "lynx")
    heat = np.zeros((7, 7), dtype=np.float32)
    heat[1, 5] = 1.0  # hottest cell: row 1, column 5 of the grid
    return Explanation(
        width=WIDTH, height=HEIGHT,
        top_classes=(ClassScore(281, "tabby", 0.61), ClassScore(282, "tiger cat", 0.22),
                     ClassScore(285, "Egyptian cat", 0.09)),
        score_name="softmax", score=0.61,
        attributive=Attributive(tabby, Region.from_mask(box_mask(70, 5, 110, 40), 0.8, heatmap=heat)),
        self_aware=Attributive(tabby, Region.from_mask(box_mask(75, 10, 105, 35), 0.5)),
        deliberative={2: (Insecurity((tabby, tiger), Region.from_mask(box_mask(10, 10, 50, 50), 0.9)),
                          Insecurity((tiger, egypt), Region.from_mask(box_mask(60, 40, 100, 75), 0.4))),
                      3: (Insecurity((tabby, tiger, egypt), Region.from_mask(box_mask(0, 0, 30, 30), 0.6)),)},
        counterfactual=Counterfactual(
            predicted=tabby, counter=(lynx,), query=Region.from_mask(box_mask(20, 20, 60, 60), 0.7),
            exemplars=(ExemplarSide(lynx, "request", Region.from_mask(box_mask(5, 5, 25, 45, 40, 50), 0.3)),),
            strength=0.5, complete=True),
        crop_box=(20, 0, 100, 80),
    )


@pytest.fixture
def exemplar_image() -> np.ndarray:
    """The lynx exemplar: (50, 40, 3), value 100 (dimmed to 35)."""
    return np.full((50, 40, 3), 100, dtype=np.uint8)


CHELSEA = Path(__file__).resolve().parents[2] / "docs" / "examples" / "chelsea.jpg"  # 451x300, CC0 (skimage)


@pytest.fixture(scope="session")
def chelsea_path() -> Path:
    return CHELSEA


@pytest.fixture(scope="session")
def local_backend():
    """The real default engine (EfficientNet-Lite0, ImageNet weights from the installed package), in process."""
    from galore_cli.local import LocalBackend

    return LocalBackend(device="cpu")
