"""Gradient-Hessian on a piecewise-linear head by its structure (u^T S u, u = J F_ij through the first Linear, or by
one forward-mode product per location) equals the general double-backward path, on the heads of VGG16, ResNet-50
(piecewise linear) and MobileNetV3-Large (hardswish: the general path stays), for logit and probability targets with
a score column, as the engine asks."""
from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch
import torchvision

from galore.attribution import (attribute, first_linear, gradient_hessian, gradient_hessian_piecewise_linear,
                                piecewise_linear)
from galore.confidence import SELF_REFERENTIAL, Targets, class_values
from galore.model import split_classifier
from galore.options import Attribution, Score, Target

ARCHS = {"vgg16": True, "resnet50": True, "mobilenet_v3_large": False}  # arch -> its head is piecewise linear


@lru_cache(maxsize=None)
def head_of(arch: str):
    """(arch, its head after the default layer F, F's channels); random weights, 10 classes."""
    torch.manual_seed(0)
    split = split_classifier(getattr(torchvision.models, arch)(num_classes=10).eval())
    return arch, split.head, split.feature_shape[0]


@pytest.fixture(params=list(ARCHS))
def head(request):
    return head_of(request.param)


def values_of(target: Target):
    idx = torch.tensor([[3, 1, 7], [0, 2, 5]])

    def of_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:  # as rows.py: targets + a score
        values = class_values(logits, target).gather(1, idx[ids])
        return torch.cat([values, SELF_REFERENTIAL[Score.SOFTMAX](logits)[:, None]], dim=1)
    return of_logits


def test_the_allow_list_reads_each_head(head):
    arch, module, _ = head
    assert piecewise_linear(module) is ARCHS[arch]


@pytest.mark.parametrize("arch", [a for a, linear in ARCHS.items() if linear])
@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("per_pass", [None, 4])  # None: through the first Linear; 4: per-location jvp
def test_structured_gradient_hessian_equals_the_double_backward(arch, target, per_pass):
    _, module, D = head_of(arch)
    F = torch.rand(2, D, 3, 3, generator=torch.Generator().manual_seed(1)) * 2
    of_logits = values_of(target)

    def fn(f, ids):
        return of_logits(module(f), ids)
    ref, ref_last = gradient_hessian(fn, F, split_last=True)
    got, got_last = gradient_hessian_piecewise_linear(module, of_logits, F, locations_per_pass=per_pass,
                                                       split_last=True)
    scale = ref.abs().max()
    assert torch.allclose(got, ref, atol=1e-4 * scale, rtol=1e-4)
    assert torch.allclose(got_last, ref_last, atol=1e-4 * ref_last.abs().max(), rtol=1e-4)
    if target is Target.LOGIT:  # the classes' quadratic term is exactly zero: gradient x activation
        gxa = attribute(Attribution.GRADIENT_X_ACTIVATION, fn, F)
        assert torch.allclose(got[:, :-1], gxa[:, :-1], atol=1e-6 * scale)


@pytest.mark.parametrize("arch", [a for a, linear in ARCHS.items() if linear])
@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY, None])
def test_closed_form_second_derivatives_equal_the_double_backward(arch, target, score):
    """The engine's targets (``Targets``: classes + score) take the closed-form u^T S u and S u, both tangent paths."""
    _, module, D = head_of(arch)
    F = torch.rand(2, D, 3, 3, generator=torch.Generator().manual_seed(3)) * 2
    targets = Targets(target, torch.tensor([[3, 1, 7], [0, 2, 5]]), score)

    def fn(f, ids):
        return targets(module(f), ids)
    ref, ref_last = gradient_hessian(fn, F, split_last=True)
    for per_pass in (None, 4):
        got, got_last = gradient_hessian_piecewise_linear(module, targets, F, locations_per_pass=per_pass,
                                                           split_last=True)
        assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)
        assert torch.allclose(got_last, ref_last, atol=1e-4 * ref_last.abs().max().clamp_min(1e-12), rtol=1e-4)


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("score", [Score.SOFTMAX, Score.CERTAINTY, None])
def test_closed_forms_equal_nested_forward_mode_on_random_logits(target, score):
    g = torch.Generator().manual_seed(7)
    z, u = torch.randn(6, 9, generator=g, dtype=torch.float64) * 3, torch.randn(6, 9, generator=g, dtype=torch.float64)
    targets, ids = Targets(target, torch.randint(0, 9, (3, 4), generator=g), score), torch.tensor([0, 1, 2, 2, 1, 0])

    def along_u(lg):
        return torch.func.jvp(lambda x: targets(x, ids), (lg,), (u,))[1]
    ref = torch.func.jvp(along_u, (z,), (u,))[1]
    ref_last = torch.func.jvp(torch.func.grad(lambda lg: targets(lg, ids)[:, -1].sum()), (z,), (u,))[1]
    assert torch.allclose(targets.second_along(z, u, ids), ref, atol=1e-12)
    assert torch.allclose(targets.last_along(z, u, ids), ref_last, atol=1e-12)


def test_second_derivative_of_a_probability_by_hand():
    """Two classes, z = (log 3, 0), u = (1, 0): h_0 = sigmoid(z_0 - z_1 + e), h_0'' = s (1 - s)(1 - 2 s) at s = 3/4,
    = -3/32; the softmax score is h_0 too; S u of h_0 = h_0'' / u_0 on class 0 and its negative on class 1."""
    z, u = torch.tensor([[math.log(3), 0.0]]), torch.tensor([[1.0, 0.0]])
    targets = Targets(Target.PROBABILITY, torch.tensor([[0, 1]]), Score.SOFTMAX)
    assert torch.allclose(targets.second_along(z, u, torch.tensor([0])), torch.tensor([[-3 / 32, 3 / 32, -3 / 32]]))
    assert torch.allclose(targets.last_along(z, u, torch.tensor([0])), torch.tensor([[-3 / 32, 3 / 32]]))


def test_the_first_linear_split_reads_each_head():
    """VGG16 (max pool, average pool, flatten, Linear) and ResNet-50 (average pool, flatten, fc) split at their first
    Linear; MobileNetV3 is not piecewise linear, and a convolution before the Linear mixes channels."""
    assert [first_linear(head_of(a)[1]) is not None for a in ARCHS] == [True, True, False]
    mixing = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    assert first_linear(mixing) is None


def test_overlapping_pooling_before_the_first_linear_equals_the_double_backward():
    """Overlapping max-pooling windows (3 x 3, stride 2, padded): a location reaches several positions."""
    torch.manual_seed(4)
    module = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 9, 16),
                                 torch.nn.ReLU(inplace=True), torch.nn.Dropout(), torch.nn.Linear(16, 10)).eval()
    assert first_linear(module) is not None
    F = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(5))
    of_logits = values_of(Target.PROBABILITY)

    def fn(f, ids):
        return of_logits(module(f), ids)
    ref, ref_last = gradient_hessian(fn, F, split_last=True)
    got, got_last = gradient_hessian_piecewise_linear(module, of_logits, F, split_last=True)
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)
    assert torch.allclose(got_last, ref_last, atol=1e-4 * ref_last.abs().max(), rtol=1e-4)


def test_dispatch_takes_the_general_path_off_the_allow_list(head):
    arch, module, D = head
    F = torch.rand(1, D, 2, 2, generator=torch.Generator().manual_seed(2))
    of_logits = values_of(Target.PROBABILITY)

    def fn(f, ids):
        return of_logits(module(f), ids)
    got = attribute(Attribution.GRADIENT_HESSIAN, fn, F, parts=(module, of_logits))
    ref = gradient_hessian(fn, F)
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)


def test_the_affine_check_reads_each_head():
    from galore.attribution import affine
    assert [affine(head_of(a)[1]) for a in ARCHS] == [False, True, False]  # VGG has ReLUs, ResNet avgpool + fc


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
def test_integrated_gradients_on_an_affine_head_equal_the_step_by_step_path(target):
    """ResNet-50's head is affine: the 50 steps move along the logits' line and F's gradient is one product."""
    from galore.attribution import integrated_gradients, integrated_gradients_affine
    _, module, D = head_of("resnet50")
    F = torch.rand(2, D, 3, 3, generator=torch.Generator().manual_seed(3)) * 3
    of_logits = values_of(target)

    def fn(f, ids):
        return of_logits(module(f), ids)
    ref, ref_last = integrated_gradients(fn, F, split_last=True)
    got, got_last = integrated_gradients_affine(module, of_logits, F, split_last=True)
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)
    assert torch.allclose(got_last, ref_last, atol=1e-4 * ref_last.abs().max(), rtol=1e-4)
    routed = attribute(Attribution.INTEGRATED_GRADIENTS, fn, F, parts=(module, of_logits))
    assert torch.allclose(routed, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)


def test_the_homogeneous_split_reads_each_head():
    """VGG16's max pool, average pool and flatten are positively homogeneous (ResNet-50's average pool too, but its
    affine head takes the affine path first); ReLU6 (a clamp at 6) and BatchNorm (a shift) before the Linear are not."""
    from galore.attribution import homogeneous_first_linear
    assert [homogeneous_first_linear(head_of(a)[1]) is not None for a in ARCHS] == [True, True, False]
    for op in (torch.nn.ReLU6(), torch.nn.BatchNorm2d(4).eval()):
        module = torch.nn.Sequential(op, torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
        assert first_linear(module) is not None and homogeneous_first_linear(module) is None


@pytest.mark.parametrize("target", [Target.LOGIT, Target.PROBABILITY])
@pytest.mark.parametrize("zeros", [False, True])  # True: post-ReLU features, max-pooling windows tied at 0
def test_integrated_gradients_through_the_first_linear_equal_the_step_by_step_path(target, zeros):
    """VGG16's head before its first Linear is positively homogeneous: the 50 steps run through the rest of the head
    only and the first Linear's transpose is applied once; the same maps as eq. (19) step by step."""
    from galore.attribution import integrated_gradients, integrated_gradients_first_linear, homogeneous_first_linear
    _, module, D = head_of("vgg16")
    gen = torch.Generator().manual_seed(3)
    F = (torch.randn(2, D, 4, 4, generator=gen).relu() if zeros else torch.rand(2, D, 3, 3, generator=gen)) * 3
    of_logits = values_of(target)

    def fn(f, ids):
        return of_logits(module(f), ids)
    ref, ref_last = integrated_gradients(fn, F, split_last=True)
    got, got_last = integrated_gradients_first_linear(homogeneous_first_linear(module), of_logits, F, split_last=True)
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)
    assert torch.allclose(got_last, ref_last, atol=1e-4 * ref_last.abs().max(), rtol=1e-4)
    routed = attribute(Attribution.INTEGRATED_GRADIENTS, fn, F, parts=(module, of_logits))
    assert torch.allclose(routed, ref, atol=1e-4 * ref.abs().max(), rtol=1e-4)


def test_integrated_gradients_through_the_first_linear_run_on_meta():
    """No host reads: the route runs on PyTorch's data-less meta device (as CUDA would, without a sync)."""
    module = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4, 8),
                                 torch.nn.ReLU(inplace=True), torch.nn.Linear(8, 5)).eval().to("meta")
    F = torch.rand(2, 4, 4, 4, device="meta")

    def of_logits(logits, ids):
        return logits.softmax(-1)[:, :3]
    maps, last = attribute(Attribution.INTEGRATED_GRADIENTS, lambda f, ids: of_logits(module(f), ids), F,
                           split_last=True, parts=(module, of_logits))
    assert maps.device.type == "meta" and maps.shape == (2, 3, 4, 4) and last.shape == (2, 4, 4, 4)
