"""Every torchvision classifier with a spatial feature map is served, at the input its ImageNet weights were
evaluated at (``galore.zoo``)."""
from __future__ import annotations

import pytest
import torch

from galore import Engine, ExplainOptions, ImageRequest, Kind, ModelError, zoo


def test_the_zoo_is_every_classifier_with_a_spatial_map_and_no_vit():
    assert {"vgg16", "resnet50", "alexnet", "convnext_tiny", "swin_t", "regnet_y_400mf", "inception_v3",
            "maxvit_t"} <= set(zoo.TORCHVISION_ARCHS)
    assert not [a for a in zoo.TORCHVISION_ARCHS if a.startswith("vit_")]
    with pytest.raises(ModelError) as caught:
        zoo.torchvision_preprocess("vit_b_16")
    assert caught.value.field == "arch"


@pytest.mark.parametrize("arch, resize, crop, mean", [
    ("vgg16", 256, 224, (0.485, 0.456, 0.406)),  # the paper's three: the classic 256 / 224 recipe
    ("resnet50", 256, 224, (0.485, 0.456, 0.406)),
    ("inception_v3", 342, 299, (0.485, 0.456, 0.406)),  # torchvision's metadata for its first ImageNet weights
    ("efficientnet_b3", 320, 300, (0.485, 0.456, 0.406)),
    ("efficientnet_v2_l", 480, 480, (0.5, 0.5, 0.5)),
])
def test_preprocessing_follows_the_weights_recipe(arch, resize, crop, mean):
    prep = zoo.torchvision_preprocess(arch)
    assert (prep.resize, prep.crop, prep.mean) == (resize, crop, mean)


def test_an_inception_engine_sees_299_pixels_and_explains():
    torch.manual_seed(0)
    engine = Engine.from_torchvision("inception_v3", [f"c{i}" for i in range(4)], device="cpu")
    assert engine.preprocess.crop == 299 and engine.split.feature_shape == (2048, 8, 8)
    assert engine.grid.side == 299  # the working grid covers the model's own crop
    image = (torch.rand(3, 320, 480, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    (res,) = engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})))])
    assert res.error is None and res.attributive.region.mask.shape == (320, 480)
