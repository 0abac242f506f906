"""Heads that start with global average pooling: gradients through the rest of the head only (``galore.pooled_head``)
equal autograd's through the whole head, for gradient x activation and Grad-CAM, in attribute() and in the engine's
head pass; heads that pool otherwise, or read F again after pooling, keep the full backward."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from galore.attribution import (attribute, grad_cam, gradient_hessian, gradient_x_activation, integrated_gradients,
                                target_gradients)
from galore.confidence import Targets
from galore.model import split_classifier
from galore.options import Attribution, Score, Target
from galore.pooled_head import gradient_hessian_pooled_linear, pooled_gradients, pooled_split
from galore.rows import HeadPass


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)

    def forward(self, f):
        return self.fc(torch.tanh(f.mean((2, 3))))


class ReadsFTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)

    def forward(self, f):
        return self.fc(f.mean((-2, -1))) + f[:, :5, 0, 0]


def _torchvision_head(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return split_classifier(getattr(torchvision.models, arch)(num_classes=7).eval()).head


def test_the_split_reads_each_head():
    pooled = {a: pooled_split(_torchvision_head(a)) is not None
              for a in ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "vgg11", "alexnet")}
    assert pooled == {"resnet18": True, "mobilenet_v3_small": True, "efficientnet_b0": True, "vgg11": False,
                      "alexnet": False}  # VGG and AlexNet max-pool, then average to 7 x 7 (not global)
    linear = {a: pooled_split(_torchvision_head(a)).linear is not None
              for a in ("resnet18", "mobilenet_v3_small", "efficientnet_b0")}
    assert linear == {"resnet18": True, "mobilenet_v3_small": False, "efficientnet_b0": True}  # MLP: not one Linear
    assert pooled_split(MeanHead()) is not None and pooled_split(MeanHead()).linear is None  # tanh before the Linear
    assert pooled_split(ReadsFTwice()) is None
    assert pooled_split(nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(6, 5))) is None
    assert pooled_split(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))) is None


@pytest.mark.parametrize("make", [lambda: _torchvision_head("mobilenet_v3_small"), lambda: _torchvision_head("resnet18"),
                                  MeanHead], ids=["mobilenet_v3_small", "resnet18", "mean"])
@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
def test_pooled_gradients_equal_the_full_backward(make, target):
    head = make().eval()
    split = pooled_split(head)
    D = head.fc.in_features if isinstance(head, MeanHead) else None
    F = torch.randn(3, D or _channels(head), 4, 5, generator=torch.Generator().manual_seed(1))
    targets = Targets(target, torch.tensor([[0, 3], [2, 1], [4, 4]]), Score.CERTAINTY)

    def fn(f, ids):
        return targets(head(f), ids)
    full = target_gradients(fn, F)  # (R, T, D, h, w)
    pooled = pooled_gradients(split, targets, F)  # (R, T, D, 1, 1)
    assert pooled.shape == full.shape[:3] + (1, 1)
    torch.testing.assert_close(pooled.expand_as(full), full, rtol=1e-5, atol=1e-7)
    for method, ref in ((Attribution.GRADIENT_X_ACTIVATION, gradient_x_activation), (Attribution.GRAD_CAM, grad_cam)):
        got, got_last = attribute(method, fn, F, split_last=True, parts=(head, targets))
        want, want_last = ref(fn, F, split_last=True, grads=full)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_last, want_last, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY, None])
def test_gradients_through_a_linear_in_closed_form_equal_autograd(target, score):
    g = torch.Generator().manual_seed(3)
    W, b = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets, ids = Targets(target, torch.randint(0, 7, (4, 3), generator=g), score), torch.arange(4)
    z = x @ W.T + b
    rows = [torch.autograd.grad(targets(z, ids)[:, t].sum(), x, retain_graph=True)[0] for t in range(4)]
    want = torch.stack(rows, 1)  # (N, T + 1, D): rows are independent, so the sum's gradient is each row's own
    torch.testing.assert_close(targets.through_linear(W, z.detach(), ids), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])  # autograd from the pooled x / closed form
def test_the_head_pass_of_a_pooled_head_equals_the_full_backward(arch):
    head = _torchvision_head(arch)
    F = torch.randn(2, _channels(head), 7, 7, generator=torch.Generator().manual_seed(2))
    targets = Targets(Target.LOGIT, torch.tensor([[1, 6], [0, 2]]), Score.SOFTMAX)
    head_pass = HeadPass(head, F)
    assert head_pass.pooled is not None and head_pass.leaf.shape[1] == F.shape[1]
    torch.testing.assert_close(head_pass.logits, head(F), rtol=0, atol=0)  # the head's own pooling: same logits

    class Row:  # the head pass reads a row's features by identity
        def __init__(self, F):
            self.feats = self
            self.F = F
    rows = [Row(F[0]), Row(F[1])]
    for b, r in enumerate(rows):
        head_pass.index[id(r.feats)] = b
    got = head_pass.gradients(rows, targets)
    full = target_gradients(lambda f, ids: targets(head(f), ids), F)
    torch.testing.assert_close(got.expand_as(full), full, rtol=1e-5, atol=1e-7)


def _channels(head: nn.Module) -> int:
    return next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY, None])
def test_gradient_hessian_through_pooling_and_a_linear_equals_the_double_derivative(target, score):
    """ResNet's head (average pool, fc), random weights: the closed forms equal the general path (forward-over-forward
    per location), maps and the score's per-channel terms; attribute() takes this path for the engine's targets."""
    head = _torchvision_head("resnet18")
    split = pooled_split(head)
    F = torch.rand(2, _channels(head), 3, 4, generator=torch.Generator().manual_seed(4)) * 3
    targets = Targets(target, torch.tensor([[3, 1, 6], [0, 2, 5]]), score)

    def fn(f, ids):
        return targets(head(f), ids)
    ref, ref_last = gradient_hessian(fn, F, split_last=True)
    got, got_last = gradient_hessian_pooled_linear(split, targets, F, split_last=True)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    torch.testing.assert_close(got_last, ref_last, rtol=1e-4, atol=1e-4 * float(ref_last.abs().max()) + 1e-12)
    via, _ = attribute(Attribution.GRADIENT_HESSIAN, fn, F, split_last=True, parts=(head, targets))
    torch.testing.assert_close(via, got, rtol=0, atol=0)


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY])
def test_integrated_gradients_through_pooling_and_a_linear_equal_the_step_by_step_path(target, score):
    """The logits of the path a_k F lie on one line: the closed-form gradients at its 50 points equal the 50 passes
    through the head, and attribute() takes this path for the engine's targets."""
    head = _torchvision_head("resnet18")
    F = torch.rand(2, _channels(head), 3, 4, generator=torch.Generator().manual_seed(6)) * 3
    targets = Targets(target, torch.tensor([[3, 1, 6], [0, 2, 5]]), score)

    def fn(f, ids):
        return targets(head(f), ids)
    ref, ref_last = integrated_gradients(fn, F, split_last=True)
    got, got_last = attribute(Attribution.INTEGRATED_GRADIENTS, fn, F, split_last=True, parts=(head, targets))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    torch.testing.assert_close(got_last, ref_last, rtol=1e-4, atol=1e-5 * float(ref_last.abs().max()))


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY, None])
def test_mean_through_linear_equals_autograd_along_a_path_whose_top_class_changes(target, score):
    """Targets.mean_through_linear against the mean of 20 autograd gradients (float64). The path runs from logits
    whose top class is 0 to logits whose top class is 2, so eq. (21)'s class changes half way."""
    g = torch.Generator().manual_seed(3)
    C, D, S = 5, 7, 20
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    start, end = torch.tensor([3.0, 0, 1, 0, -1], dtype=torch.float64), torch.tensor([0, 1, 4.0, 0, 2], dtype=torch.float64)
    a = torch.arange(1, S + 1, dtype=torch.float64) / S
    z = torch.stack([start + a[:, None] * (end - start), end + a[:, None] * (start - end)])  # (R = 2, S, C)
    assert z[0, 0].argmax() == 0 and z[0, -1].argmax() == 2
    targets = Targets(target, torch.tensor([[2, 0], [4, 1]]), score)
    ids = torch.arange(2)
    leaf = z.reshape(2 * S, C).clone().requires_grad_(True)
    values = targets(leaf, ids.repeat_interleave(S))  # (R * S, T + 1)
    rows = [torch.autograd.grad(values[:, t].sum(), leaf, retain_graph=True)[0] for t in range(values.shape[1])]
    ref = (torch.stack(rows, 1) @ W).reshape(2, S, -1, D).mean(1)  # (R, T + 1, D)
    torch.testing.assert_close(targets.mean_through_linear(W, z, ids), ref, rtol=1e-10, atol=1e-12)
