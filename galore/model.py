"""Split a classifier at one feature layer F into backbone (image -> F) and head (F -> logits).

Every GALORE attribution is taken at F, so only the head is ever differentiated (§V-C). The split is done on the
torch.fx graph of the model in eval mode, so any torchvision classifier (ResNet, VGG, AlexNet, DenseNet,
EfficientNet, MobileNetV2/V3) and the default EfficientNet-Lite0 split without per-family code.

Example:
    >>> import torch, torchvision
    >>> split = split_classifier(torchvision.models.resnet18().eval())
    >>> split.layer, split.feature_shape
    ('layer4.1.relu_1', (512, 7, 7))
    >>> F = split.backbone(torch.zeros(2, 3, 224, 224))   # (B, D, h, w)
    >>> split.head(F).shape                                # (B, C)
    torch.Size([2, 1000])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.models.feature_extraction import NodePathTracer

from .errors import ModelError

_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_FUNCTIONS = {
    torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d, torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d, torch.max_pool2d, torch.adaptive_avg_pool1d,
}


@dataclass(frozen=True)
class SplitModel:
    """backbone: (B, 3, S, S) -> F (B, D, h, w); head: F -> (B, P) logits. ``layer`` is F's node name."""

    backbone: nn.Module
    head: nn.Module
    layer: str
    feature_shape: tuple[int, int, int]  # (D, h, w) at input_size
    input_size: int

    def to(self, device: torch.device) -> "SplitModel":
        return SplitModel(self.backbone.to(device), self.head.to(device), self.layer, self.feature_shape,
                          self.input_size)


def split_classifier(model: nn.Module, layer: str | None = None, input_size: int = 224) -> SplitModel:
    """Split ``model`` (put in eval mode) at ``layer``, by default the last spatial feature map before pooling.

    ``layer`` may be a graph node name (``layer4.2.relu_2``) or a module name (``layer4``, ``features.29``); a
    module name means the last node inside that module.
    """
    model = model.eval()
    tracer = NodePathTracer()
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph)
    names = {node: tracer.node_to_qualname.get(node, node.name) for node in graph.nodes}
    ShapeProp(gm).propagate(torch.zeros(1, 3, input_size, input_size, device="cpu"))
    (out_node,) = [n for n in graph.nodes if n.op == "output"]
    logits = out_node.args[0]
    cut = _find_node(graph, names, layer) if layer else _last_feature_map(gm, graph, logits)
    meta = cut.meta.get("tensor_meta")
    if meta is None or len(meta.shape) != 4:
        raise ModelError("layer", f"{names[cut]!r} is not a (B, D, h, w) feature map")
    (x_node,) = [n for n in graph.nodes if n.op == "placeholder"]
    backbone = _subgraph(gm, {x_node: "x"}, cut)
    head = _subgraph(gm, {cut: "F"}, logits, copy_input=True)
    split = SplitModel(backbone, head, names[cut], tuple(meta.shape[1:]), input_size)
    _probe(model, split)
    return split


def fold_batch_norms(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` with every eval-mode BatchNorm folded into the convolution that feeds only it: the
    same function up to float rounding, one memory pass less per BatchNorm. ``nn.Conv2d`` modules are folded by
    torch.fx's ``fuse``; convolutions traced as ``torch.conv2d`` calls (EfficientNet-Lite's same-padding convs) by
    ``_fold_conv_calls``. Only the backbone is folded: it runs without autograd, and the head keeps the model's own
    layers. A module that is not a GraphModule (every split is one) is returned as it is."""
    if not isinstance(backbone, fx.GraphModule) or backbone.training:
        return backbone
    from torch.fx.experimental.optimization import fuse

    folded = fuse(backbone, no_trace=True)
    _fold_conv_calls(folded)
    return folded.eval()


def _fold_conv_calls(gm: fx.GraphModule) -> None:
    """In place: every ``torch.conv2d(x, W, b, ...)`` call whose only user is an eval BatchNorm2d module takes the
    BatchNorm's scale into W and its shift into a new bias (kept on W's module), and the BatchNorm leaves the
    graph. W and b must be attributes used by that call alone; anything else is left as it is."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None or len(node.args) != 1 or node.kwargs:
            continue
        conv = node.args[0]
        if not (isinstance(conv, fx.Node) and conv.op == "call_function" and conv.target is torch.conv2d
                and len(conv.users) == 1 and not conv.kwargs and len(conv.args) >= 2):
            continue
        args = list(conv.args) + [None] * max(0, 3 - len(conv.args))  # (input, weight, bias, stride, ...)
        weight, bias = args[1], args[2]
        if not _own_attr(weight) or (bias is not None and not _own_attr(bias)):
            continue
        owner_name, _, name = weight.target.rpartition(".")
        owner = gm.get_submodule(owner_name)
        w = getattr(owner, name)
        b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if bias is None else _attr(gm, bias.target)
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var + bn.eps) * (bn.weight if bn.affine else 1.0)  # (D_out,)
            shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
            setattr(owner, name, nn.Parameter(w * scale.reshape(-1, 1, 1, 1)))
            owner.register_parameter(f"{name}_folded_bias", nn.Parameter(b * scale + shift))
        with gm.graph.inserting_before(conv):
            args[2] = gm.graph.get_attr(f"{owner_name}.{name}_folded_bias" if owner_name else f"{name}_folded_bias")
        conv.args = tuple(args)
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _own_attr(node) -> bool:
    return isinstance(node, fx.Node) and node.op == "get_attr" and len(node.users) == 1


def _attr(gm: nn.Module, target: str):
    for part in target.split("."):
        gm = getattr(gm, part)
    return gm


def _probe(model: nn.Module, split: SplitModel) -> None:
    """Refuses, at load, a split that cannot explain: the head must reproduce the model's logits from F and be
    differentiable with respect to F (ModelError naming ``layer`` otherwise)."""
    x = torch.randn(1, 3, split.input_size, split.input_size, generator=torch.Generator().manual_seed(0),
                    device="cpu")
    try:
        with torch.no_grad():
            expected, F = model(x), split.backbone(x)
        leaf = F.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = split.head(leaf)
            (grad,) = torch.autograd.grad(logits[:, 0].sum(), leaf)
    except Exception as exc:  # noqa: BLE001 - any failure of the head at this layer is the layer's fault
        raise ModelError("layer", f"the model cannot be explained at layer {split.layer!r}: "
                                  f"{type(exc).__name__}: {exc}") from exc
    if logits.shape != expected.shape or not torch.allclose(logits.detach(), expected, rtol=1e-4,
                                                            atol=1e-4 * float(expected.abs().max().clamp_min(1))):
        raise ModelError("layer", f"splitting at layer {split.layer!r} does not reproduce the model's output")
    if grad.shape != F.shape:
        raise ModelError("layer", f"the head's gradient at layer {split.layer!r} has the wrong shape")


def _find_node(graph: fx.Graph, names: dict, layer: str) -> fx.Node:
    matches = [n for n in graph.nodes if names[n] == layer or names[n].startswith(layer + ".")]
    matches = [n for n in matches if n.op != "get_attr"]
    if not matches:
        raise ModelError("layer", f"no node or module named {layer!r} in the model")
    return matches[-1]


def _is_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _POOL_MODULES)
    return node.op == "call_function" and node.target in _POOL_FUNCTIONS


def _last_feature_map(gm: fx.GraphModule, graph: fx.Graph, logits: fx.Node) -> fx.Node:
    """The last non-pooling node with a spatial (h, w > 1) 4-D output that is a clean cut to the logits."""
    for node in reversed(list(graph.nodes)):
        meta = node.meta.get("tensor_meta")
        if node.op in ("placeholder", "output", "get_attr") or meta is None or not hasattr(meta, "shape"):
            continue
        if len(meta.shape) == 4 and meta.shape[2] > 1 and meta.shape[3] > 1 and not _is_pool(gm, node):
            try:
                _needed(logits, {node})
                return node
            except ModelError:
                continue
    raise ModelError("layer", "found no spatial feature map in the model; name one explicitly")


def _needed(output: fx.Node, inputs: set[fx.Node]) -> set[fx.Node]:
    """Nodes that compute ``output`` from ``inputs``; raises if the cut leaks another path from the image."""
    seen: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in seen or node in inputs:
            continue
        if _is_batch_size(node):  # x.size(0): the batch size, rebound to the cut's input in _subgraph
            seen.add(node)
            continue
        if node.op == "placeholder":
            raise ModelError("layer", "the chosen layer is not a cut point: the head also reads the image")
        seen.add(node)
        stack.extend(node.all_input_nodes)
    return seen


def _is_batch_size(node: fx.Node) -> bool:
    """``x.size(0)`` on the image, as EfficientNet-Lite's flatten does; it carries no image content."""
    return (node.op == "call_method" and node.target == "size" and len(node.args) == 2 and node.args[1] == 0
            and isinstance(node.args[0], fx.Node) and node.args[0].op == "placeholder")


def _subgraph(gm: fx.GraphModule, inputs: dict[fx.Node, str], output: fx.Node, copy_input: bool = False
              ) -> fx.GraphModule:
    """The nodes computing ``output`` from ``inputs``. ``copy_input``: the graph works on a copy of its input, so
    an in-place op at its start (DenseNet's ReLU after ``features``, an inplace ReLU after the chosen layer) never
    writes into the caller's tensor: neither the cached features nor an autograd leaf."""
    keep = _needed(output, set(inputs))
    graph = fx.Graph()
    env = {node: graph.placeholder(name) for node, name in inputs.items()}
    first = next(iter(env.values()))
    if copy_input:
        env = {node: graph.call_method("clone", (value,)) for node, value in env.items()}
    for node in gm.graph.nodes:
        if node in keep and _is_batch_size(node) and node.args[0] not in env:
            env[node] = graph.call_method("size", (first, 0))
        elif node in keep:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[output])
    sub = fx.GraphModule(gm, graph)
    sub.graph.eliminate_dead_code()
    sub.recompile()
    return sub.eval()
