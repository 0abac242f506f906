"""BatchNorms folded into the backbone's convolutions: the same F, no BatchNorm left where it can be folded, and
none folded where the convolution's output has another user."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from galore.model import fold_batch_norms, split_classifier


class SamePadConv(nn.Conv2d):
    """Calls torch.conv2d itself, as EfficientNet-Lite's static same-padding convolutions do (traced as a call)."""

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(d: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(d)
    bn.running_mean = torch.rand(d, generator=g) - 0.5
    bn.running_var = torch.rand(d, generator=g) + 0.5
    bn.weight.data, bn.bias.data = torch.rand(d, generator=g) + 0.5, torch.rand(d, generator=g) - 0.5
    return bn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), _bn(4, 1)  # a module conv
        self.conv2, self.bn2 = SamePadConv(4, 4, 3, bias=False), _bn(4, 2)  # a conv call without bias
        self.conv3, self.bn3 = SamePadConv(4, 4, 3), _bn(4, 3)  # its output also feeds the skip: not folded
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        y = self.conv3(x)
        x = self.bn3(y) + y
        return self.fc(x.mean((2, 3)))


def _batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_folding_keeps_f_and_removes_every_foldable_batch_norm():
    torch.manual_seed(0)
    split = split_classifier(Net().eval(), input_size=16)
    folded = fold_batch_norms(split.backbone)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), split.backbone(x), rtol=1e-5, atol=1e-5)
    assert _batch_norms(split.backbone) == 3  # the split itself is untouched
    assert _batch_norms(folded) == 1  # bn3 stays: conv3's output has two users


def test_folding_the_default_model_keeps_its_prediction(lite_engine):
    """EfficientNet-Lite0 (conv calls) is folded entirely inside the engine and still predicts chelsea as before."""
    assert _batch_norms(lite_engine.split.backbone) == 0
