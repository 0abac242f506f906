"""Any layer of the last stage works or is refused at load (issue 11, item 5).

For every supported family, every module of the last stage's last block, the stage and its blocks, and every graph
node between the last stage and the pooling that follows it are tried as F: ``Engine`` either refuses the layer when
it is built (``ModelError`` naming ``layer``) or explains an image with every kind, with finite maps. Models have
random weights and see a 64 x 64 crop, so the walk stays cheap.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import NodePathTracer

from galore import Engine, ExplainOptions, ImageRequest, ModelError, zoo
from galore.model import _is_pool
from galore.preprocess import Preprocess

PREP = Preprocess(resize=64, crop=64)
LABELS = ["a", "b", "c", "d", "e"]
FAMILIES = {  # family -> (constructor, module name of its last stage)
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=5), "layer4"),
    "vgg11": (lambda: torchvision.models.vgg11(num_classes=5), "features"),
    "alexnet": (lambda: torchvision.models.alexnet(num_classes=5), "features"),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=5), "features.denseblock4"),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=5), "features.7"),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=5), "features.17"),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=5), "features.11"),
    "efficientnet_lite0": (zoo.efficientnet_lite0, "_blocks.15"),
    # families beyond the paper's and the first supported list (zoo.TORCHVISION_ARCHS takes every torchvision
    # classifier with a spatial map): layer norms and GELU, channels-last attention, grouped convs, channel shuffle,
    # concatenating inception blocks, a convolutional classifier
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=5), "features.7"),
    "swin_t": (lambda: torchvision.models.swin_t(num_classes=5), "features.7"),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=5), "trunk_output.block4"),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=5), "conv5"),
    "googlenet": (lambda: torchvision.models.googlenet(num_classes=5, init_weights=False), "inception5b"),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(num_classes=5), "features"),
}


def layer_choices(model: torch.nn.Module, stage: str) -> list[str]:
    """The stage, its blocks, every module of its last block (VGG / AlexNet: the stage's last 5 modules), and every
    node after the stage up to the first pooling."""
    children = [f"{stage}.{name}" for name, _ in model.get_submodule(stage).named_children()]
    last = children[-1]
    if stage == "features" and not list(model.get_submodule(last).children()):  # VGG, AlexNet: flat Sequential
        names = children[-5:]
    else:
        names = [stage] + children + [f"{last}.{n}" for n, _ in model.get_submodule(last).named_modules() if n]
    tracer = NodePathTracer()
    graph = tracer.trace(model.eval())
    gm = torch.fx.GraphModule(tracer.root, graph)
    after, seen_stage = [], False
    for node in graph.nodes:
        name = tracer.node_to_qualname.get(node, node.name)
        if name == stage or name.startswith(stage + "."):
            seen_stage = True
        elif seen_stage:
            if _is_pool(gm, node) or node.op == "output":
                break
            if node.op != "get_attr":
                after.append(name)
    return list(dict.fromkeys(names + after))


@lru_cache(maxsize=None)
def model_of(family: str) -> torch.nn.Module:
    """One model per family (random weights, seeded), shared by its cases: splitting never changes it."""
    torch.manual_seed(0)
    return FAMILIES[family][0]().eval()


CASES = [(family, layer) for family, (_, stage) in FAMILIES.items() for layer in layer_choices(model_of(family), stage)]


@pytest.mark.parametrize("family,layer", CASES, ids=[f"{f}:{layer}" for f, layer in CASES])
def test_layer_works_or_is_refused_at_load(family, layer):
    model = model_of(family)
    labels = LABELS if family != "efficientnet_lite0" else [str(c) for c in range(1000)]
    try:
        engine = Engine.from_module(family, model, labels, PREP, layer=layer, device="cpu")
    except ModelError as err:
        assert err.field == "layer" and err.message
        return
    image = (torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    (res,) = engine.explain([ImageRequest(image, ExplainOptions(top_e=3))])
    assert res.error is None, res.error
    regions = [res.attributive.region, res.self_aware.region, res.counterfactual.query] + \
        [i.region for i in res.deliberative.get(2, [])]  # random weights: a pair may share no evidence (eq. 5)
    assert all(bool(torch.isfinite(r.heatmap).all()) for r in regions)


def test_inplace_relu_at_the_head_input_keeps_features_intact():
    """DenseNet's head starts with relu(features, inplace=True): explaining must neither fail nor write into F."""
    engine = Engine.from_module("densenet121", torchvision.models.densenet121(num_classes=5), LABELS, PREP,
                                layer="features", device="cpu")
    F = torch.randn(1, *engine.split.feature_shape)
    before = F.clone()
    engine.split.head(F)
    assert torch.equal(F, before)
    image = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8)
    (res,) = engine.explain([ImageRequest(image)])
    assert res.error is None and res.attributive.region.pixel_count > 0


class _ArgmaxHead(torch.nn.Module):
    """Logits looked up by the argmax of F: the head is not differentiable with respect to F."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.table = torch.nn.Parameter(torch.randn(4, 5))

    def forward(self, x):
        return self.table[self.pool(self.conv(x)).flatten(1).argmax(1)]


def test_a_head_without_gradient_is_refused_at_load():
    with pytest.raises(ModelError) as caught:
        Engine.from_module("argmax", _ArgmaxHead(), LABELS, PREP, layer="pool", device="cpu")
    assert caught.value.field == "layer" and "pool" in caught.value.message
