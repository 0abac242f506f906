"""Our head-only batched attributions vs Captum's per-target calls on the same split model (rel. error <= 1e-4)."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from captum.attr import LayerGradCam, LayerGradientXActivation, LayerIntegratedGradients
from torch import nn

from galore import zoo
from galore.attribution import grad_cam, gradient_hessian, gradient_x_activation, integrated_gradients
from galore.model import split_classifier

torch.manual_seed(0)



@pytest.fixture(scope="module", params=["resnet18", "vgg11", "efficientnet_lite0"])
def split_case(request):
    model = dict(_models_lazy())[request.param]()
    split = split_classifier(model.eval())
    torch.manual_seed(1)
    with torch.no_grad():
        F = split.backbone(torch.randn(2, 3, 224, 224))
    # Captum sees the same computation with F exposed as a layer: backbone -> F (identity) -> head
    wrapped = nn.Sequential(OrderedDict(backbone=split.backbone, F=nn.Identity(), head=split.head)).eval()
    return split, F, wrapped


def _models_lazy():
    return [("resnet18", lambda: torchvision.models.resnet18(num_classes=10)),
            ("vgg11", lambda: torchvision.models.vgg11(num_classes=10)),
            ("efficientnet_lite0", zoo.efficientnet_lite0)]


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("probability", [False, True], ids=["logit", "probability"])
def test_gxa_gradcam_ig_match_captum(split_case, probability):
    split, F, wrapped = split_case
    targets = [0, 3]
    fn = (lambda f, ids: split.head(f).softmax(-1)[:, targets]) if probability else \
        (lambda f, ids: split.head(f)[:, targets])
    ours = {"gxa": gradient_x_activation(fn, F), "cam": grad_cam(fn, F),
            "ig": integrated_gradients(fn, F, steps=50)}  # (R, T, h, w)
    head = (lambda f: split.head(f).softmax(-1)) if probability else split.head
    full = nn.Sequential(OrderedDict(F=nn.Identity(), head=_Lambda(head)))  # input = F itself
    for t, cls in enumerate(targets):
        gxa = LayerGradientXActivation(full, full.F).attribute(F, target=cls).sum(1)
        cam = LayerGradCam(full, full.F).attribute(F, target=cls, relu_attributions=False)[:, 0]
        ig = LayerIntegratedGradients(full, full.F).attribute(
            F, baselines=torch.zeros_like(F), target=cls, n_steps=50, method="riemann_right").sum(1)
        assert _rel(ours["gxa"][:, t], gxa) <= 1e-4
        assert _rel(ours["cam"][:, t], cam) <= 1e-4
        assert _rel(ours["ig"][:, t], ig) <= 1e-4
    # Captum on the whole network (image input, hook on the F layer) agrees too
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        Fx = split.backbone(x)
    whole = LayerGradientXActivation(wrapped, wrapped.F).attribute(x, target=3).sum(1)
    if not probability:
        assert _rel(gradient_x_activation(lambda f, ids: split.head(f)[:, [3]], Fx)[:, 0], whole) <= 1e-4


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_gradient_hessian_matches_brute_force_hessian():
    torch.manual_seed(0)
    D, h, w = 3, 2, 2
    head = nn.Sequential(nn.Conv2d(D, 4, 1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).double()
    F = torch.rand(2, D, h, w, dtype=torch.double)
    fn = lambda f, ids: head(f).softmax(-1)  # noqa: E731
    ours = gradient_hessian(fn, F, locations_per_pass=3)  # chunking over locations must not matter
    for r in range(2):
        for t in range(3):
            g_t = lambda f: fn(f[None], None)[0, t]  # noqa: E731
            g = torch.autograd.functional.jacobian(g_t, F[r])  # (D, h, w)
            H = torch.autograd.functional.hessian(g_t, F[r])  # (D, h, w, D, h, w), brute force
            for i in range(h):
                for j in range(w):
                    a = F[r, :, i, j]
                    expected = g[:, i, j] @ a + 0.5 * a @ H[:, i, j, :, i, j] @ a  # NeurIPS eq. (2)
                    assert float(ours[r, t, i, j]) == pytest.approx(float(expected), abs=1e-12)
    # a linear head has no curvature: gradient-Hessian reduces to gradient x activation
    lin = lambda f, ids: f.flatten(1) @ torch.ones(D * h * w, 2, dtype=torch.double)  # noqa: E731
    torch.testing.assert_close(gradient_hessian(lin, F), gradient_x_activation(lin, F))


# ---- parity through Engine.explain itself: the engine's own target gather, batching and explained class ---------
@pytest.fixture(scope="module")
def mobilenet_engine():
    """MobileNetV3-Large, random weights: a nonlinear head (Linear, Hardswish, Linear) after pooling."""
    from galore import Engine

    torch.manual_seed(3)
    model = torchvision.models.mobilenet_v3_large(num_classes=10).eval()
    return Engine.from_module("mobilenet_v3_large", model, [f"c{i}" for i in range(10)], device="cpu")


def _images():
    g = torch.Generator().manual_seed(5)
    return [(torch.rand(3, 240, 300, generator=g) * 255).to(torch.uint8),
            (torch.rand(3, 256, 256, generator=g) * 255).to(torch.uint8)]


def _captum_maps(engine, image, target, method, probability):
    x, _ = engine.preprocess(image)
    with torch.no_grad():
        Fx = engine.split.backbone(x[None])
    head = (lambda f: engine.split.head(f).softmax(-1)) if probability else engine.split.head
    full = nn.Sequential(OrderedDict(F=nn.Identity(), head=_Lambda(head)))
    if method == "ig":
        return LayerIntegratedGradients(full, full.F).attribute(
            Fx, baselines=torch.zeros_like(Fx), target=target, n_steps=50, method="riemann_right").sum(1)[0]
    return LayerGradientXActivation(full, full.F).attribute(Fx, target=target).sum(1)[0]


@pytest.mark.parametrize("method", ["gxa", "ig"])
@pytest.mark.parametrize("probability", [False, True], ids=["logit", "probability"])
def test_engine_explain_matches_captum(mobilenet_engine, method, probability):
    """Two images in ONE batch, each explaining a different class (one y*, one explained_class), against Captum's
    per-image, per-target attribution at F: signed maps (clip_negative=False), rel. error <= 1e-4."""
    from galore import Attribution, ExplainOptions, ImageRequest, Kind, Target

    engine = mobilenet_engine
    images = _images()
    common = dict(kinds=frozenset({Kind.ATTRIBUTIVE}), clip_negative=False,
                  attribution=Attribution.INTEGRATED_GRADIENTS if method == "ig" else Attribution.GRADIENT_X_ACTIVATION,
                  target=Target.PROBABILITY if probability else Target.LOGIT)
    requests = [ImageRequest(images[0], ExplainOptions(**common)),
                ImageRequest(images[1], ExplainOptions(**common, explained_class=7))]
    first, second = engine.explain(requests)
    assert first.error is None and second.error is None
    assert second.attributive.class_id == 7 and first.attributive.class_id == first.top_classes[0].class_id
    for res, image in ((first, images[0]), (second, images[1])):
        expected = _captum_maps(engine, image, res.attributive.class_id, method, probability)
        assert _rel(res.attributive.region.heatmap.double(), expected.double()) <= 1e-4


def test_gradient_hessian_runs_through_hardsigmoid_and_hardswish():
    """MobileNetV3's activations: torch has no derivative of hardsigmoid's backward, so the double backward runs on
    clamp compositions of the same function. Checked against a finite-difference Hessian-vector product of the
    real head's gradients (first derivatives only), per location."""
    torch.manual_seed(0)
    D, h, w = 3, 2, 2

    class SqueezeExcite(nn.Module):  # torchvision's SE: x * hardsigmoid(fc(pool(x)))
        def __init__(self):
            super().__init__()
            self.fc, self.gate = nn.Conv2d(4, 4, 1), nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))

    head = nn.Sequential(nn.Conv2d(D, 4, 1), nn.Hardswish(), SqueezeExcite(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        head[0].weight.mul_(4)  # pre-activations across hardswish's and hardsigmoid's curved range (-3, 3)
    F = torch.rand(2, D, h, w, dtype=torch.double)
    fn = lambda f, ids: head(f).softmax(-1)  # noqa: E731
    ours = gradient_hessian(fn, F)
    eps = 1e-6
    for r in range(2):
        for t in range(3):
            def grad(f):
                f = f.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(fn(f[None], None)[0, t], f)
                return g
            g = grad(F[r])
            for i in range(h):
                for j in range(w):
                    v = torch.zeros_like(F[r])
                    v[:, i, j] = F[r, :, i, j]
                    hv = (grad(F[r] + eps * v) - grad(F[r] - eps * v)) / (2 * eps)  # H v, (D, h, w)
                    a = F[r, :, i, j]
                    expected = g[:, i, j] @ a + 0.5 * a @ hv[:, i, j]
                    assert float(ours[r, t, i, j]) == pytest.approx(float(expected), abs=1e-8)
