"""Heads that start with global average pooling: every location's gradient is the pooled vector's, divided by L.

Most classifiers explained at their last feature layer (EfficientNet, ResNet, MobileNetV3, DenseNet) have a head
rest(pool(F)) with pool the average over the h x w locations. Then d g / d F_ij = (1 / L) d g / d x for x = pool(F)
(L = h w), the same at every location, so the gradients of T targets need a backward through ``rest`` only, to a
(D,) vector per row, and never the (R, T, D, h, w) tensor of a backward to F. They are returned as (R, T, D, 1, 1),
which broadcasts over the locations wherever a per-location gradient is expected.

Example:
    >>> import torch
    >>> head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> split = pooled_split(head)
    >>> F = torch.rand(2, 4, 5, 5)
    >>> grads = pooled_gradients(split, lambda logits, ids: logits[:, :2], F)   # targets: classes 0 and 1
    >>> grads.shape
    torch.Size([2, 2, 4, 1, 1])
    >>> bool(torch.allclose(grads[0, 1, :, 0, 0], head[2].weight[1] / 25))
    True
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .fx_graph import is_in, node_op
from .gradients import CurvedLogitsFn, LinearLogitsFn, LogitsFn, batched_vjp

COPIES = {"clone", "contiguous"}  # methods that read F and give it back unchanged
_SPLITS: "weakref.WeakKeyDictionary[nn.Module, PooledSplit | None]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class PooledSplit:
    """head(F) == rest(pool(F)): ``pool`` the head's own global average (F (N, D, h, w) -> (N, D, 1, 1) or (N, D)),
    ``rest`` everything after it, reading nothing else of F but its batch size."""

    pool: nn.Module
    rest: nn.Module
    linear: nn.Linear | None  # rest's one Linear when rest is only that after reshapes (and dropout in eval mode)


def pooled_split(head: nn.Module) -> PooledSplit | None:
    """The head's traced graph (torch.fx) split at its global average pooling, where F is read only by copies
    (``COPIES``), ``size(0)`` and that one pooling (adaptive average pooling to 1 x 1, or a mean over dims (2, 3));
    None otherwise (a head that does not trace, pools by max, or reads F elsewhere). Cached per head in eval mode."""
    if head in _SPLITS and not head.training:
        return _SPLITS[head]
    try:
        gm = head if isinstance(head, torch.fx.GraphModule) else torch.fx.symbolic_trace(head)
    except Exception:  # noqa: BLE001 - not traceable: not provably pooled
        split = None
    else:
        split = _split(gm)
    _SPLITS[head] = split
    return split


def _split(gm: torch.fx.GraphModule) -> PooledSplit | None:
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    if not nodes or nodes[0].op != "placeholder" or sum(n.op == "placeholder" for n in nodes) != 1:
        return None
    copies, sizes, pool = [nodes[0]], [], None
    for n in nodes[1:]:
        if not set(n.all_input_nodes) & set(copies):
            continue
        if n.op == "call_method" and n.target in COPIES and len(n.args) == 1 and not n.kwargs:
            copies.append(n)
        elif n.op == "call_method" and n.target == "size" and n.args[1:] == (0,) and not n.kwargs:
            sizes.append(n)
        elif pool is None and len(n.all_input_nodes) == 1 and _global_average(n, modules):
            pool = n
        else:
            return None
    if pool is None:
        return None
    graph = torch.fx.Graph()
    x = graph.placeholder("x")  # the pooled features
    env = {pool: x}
    for s in sizes:
        env[s] = graph.call_method("size", (x, 0))
    for n in nodes[1:]:
        if n is pool or n in copies or n in sizes:
            continue
        env[n] = graph.node_copy(n, lambda a: env[a])
    before = torch.fx.Graph()
    f = before.placeholder("f")
    inner = {nodes[0]: f}
    for n in copies[1:] + [pool]:
        inner[n] = before.node_copy(n, lambda a: inner[a])
    before.output(inner[pool])
    rest = torch.fx.GraphModule(gm, graph)
    return PooledSplit(torch.fx.GraphModule(gm, before), rest, _only_linear(rest))


RESHAPES = {"view", "reshape", "flatten", "size", torch.flatten}  # what a rest may do around its one Linear


def _only_linear(rest: torch.fx.GraphModule) -> nn.Linear | None:
    """rest's Linear if rest(x) is that Linear of x reshaped to (N, D) (reshapes, Identity, Dropout in eval mode)."""
    modules = dict(rest.named_modules())
    nodes = [n for n in rest.graph.nodes if n.op not in ("placeholder", "output")]
    if not nodes or nodes[-1].op != "call_module" or not isinstance(modules[str(nodes[-1].target)], nn.Linear):
        return None
    for n in nodes[:-1]:
        op = node_op(n, modules)
        if n.op == "call_module":
            if not (isinstance(op, nn.Identity) or (isinstance(op, nn.Dropout) and not op.training)):
                return None
        elif not (n.op in ("call_method", "call_function") and is_in(op, RESHAPES)):
            return None
    output = next(n for n in rest.graph.nodes if n.op == "output")
    return modules[str(nodes[-1].target)] if output.args[0] is nodes[-1] else None


def _global_average(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the node averages its input over every location: AdaptiveAvgPool2d(1), adaptive_avg_pool2d(x, 1)
    or x.mean((2, 3)) / torch.mean(x, (2, 3)) (also as (-2, -1))."""
    if node.op == "call_module":
        op = modules.get(str(node.target))
        return isinstance(op, nn.AdaptiveAvgPool2d) and op.output_size in (1, (1, 1))
    args = list(node.args[1:]) + list(node.kwargs.values())
    if node.op == "call_function" and node.target is nn.functional.adaptive_avg_pool2d:
        return len(args) == 1 and args[0] in (1, (1, 1))
    if (node.op == "call_method" and node.target == "mean") or (node.op == "call_function"
                                                                and node.target is torch.mean):
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        return isinstance(dims, (tuple, list)) and sorted(d % 4 for d in dims) == [2, 3] and not any(
            k not in ("dim", "keepdim") for k in node.kwargs) and len(node.args) <= 3
    return False


def pooled_gradients(split: PooledSplit, of_logits: LogitsFn, F: torch.Tensor,
                     x: torch.Tensor | None = None) -> torch.Tensor:
    """d of_logits(head(F), ids)[r, t] / d F[r] for every row r and target t, through ``split.rest`` only:
    (R, D, h, w) -> (R, T, D, 1, 1), the same at every location. x: pool(F), when the caller has it. Where rest is
    one Linear and of_logits knows its gradients through it (``LinearLogitsFn``), in closed form, with no backward."""
    R, _, h, w = F.shape
    ids = torch.arange(R, device=F.device)
    with torch.no_grad():
        x = split.pool(F) if x is None else x  # (R, D, 1, 1) or (R, D)
        if split.linear is not None and isinstance(of_logits, LinearLogitsFn):
            return per_location(of_logits.through_linear(split.linear.weight, split.rest(x), ids), h, w)
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = of_logits(split.rest(leaf), ids)  # (R, T)
    (grads,) = batched_vjp([values], [leaf])  # (R, T) + x's shape
    return per_location(grads, h, w)


def per_location(grads: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Gradients by the pooled features (R, T, D[, 1, 1]) -> by F's locations, (R, T, D, 1, 1): pool's backward."""
    R, T = grads.shape[:2]
    return grads.reshape(R, T, -1, 1, 1) / (h * w)


def path_gradients_pooled_linear(split: PooledSplit, of_logits: LogitsFn, F: torch.Tensor,
                                 steps: int = 50) -> torch.Tensor:
    """Integrated gradients' mean gradient (eq. 19, zero baseline) for a head that is global average pooling then
    one Linear (``split.linear``): along the path a_k F (a_k = k / steps, k = 1..steps) the logits are
    z_k = b + a_k (z - b) on one line, so the mean of the steps' gradients is W^T times the mean of the targets'
    C-dimensional gradients at the z_k (one batched backward through ``of_logits`` alone, or its closed form where it
    is a ``LinearLogitsFn``), with no pass through the head per step. (R, D, h, w) -> (R, T, D, 1, 1); the maps are
    F times it, summed over channels."""
    R, _, h, w = F.shape
    with torch.no_grad():
        x = split.pool(F)
        z = split.rest(x)  # (R, C)
        bias = split.linear.bias
        b = torch.zeros_like(z) if bias is None else bias.expand_as(z)  # the logits at the zero baseline: rest(0)
        alphas = torch.arange(1, steps + 1, device=F.device, dtype=F.dtype) / steps  # (S,)
        z_k = b[:, None] + alphas[None, :, None] * (z - b)[:, None]  # (R, S, C)
        if isinstance(of_logits, LinearLogitsFn):  # closed form: no backward at all
            ids = torch.arange(R, device=F.device)
            return per_location(of_logits.mean_through_linear(split.linear.weight, z_k, ids), h, w)
        z_k = z_k.reshape(R * steps, -1)  # (R * S, C)
    leaf = z_k.requires_grad_(True)
    with torch.enable_grad():
        values = of_logits(leaf, torch.arange(R, device=F.device).repeat_interleave(steps))  # (R * S, T)
    (by_logit,) = batched_vjp([values], [leaf])  # (R * S, T, C)
    mean = by_logit.reshape(R, steps, *by_logit.shape[1:]).mean(1)  # (R, T, C)
    return per_location(mean @ split.linear.weight, h, w)  # (R, T, D) -> (R, T, D, 1, 1)


def gradient_hessian_pooled_linear(split: PooledSplit, targets: LinearLogitsFn, F: torch.Tensor,
                                   split_last: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """NeurIPS 2019 eq. (2) for a head that is global average pooling then one Linear (``split.linear``; ResNet-50):
    z = W x + b, x = mean_ij F_ij, so the Hessian block of a target g(z) at location (i, j) is W^T S W / L^2 (S: g's
    Hessian in the logits) and F_ij^T H_ij F_ij = u^T S u with u = W F_ij / L: one (L, D) x (D, C) product per row,
    then ``targets``' closed forms (``CurvedLogitsFn``: second_along, and last_along for the score's per-channel
    terms F_k (W^T S u / L)_k, a second product). The gradient term is ``pooled_gradients``'. (R, D, h, w) ->
    (R, T, h, w) [, the last target per channel (R, D, h, w)]."""
    if not isinstance(targets, CurvedLogitsFn):
        raise TypeError("gradient_hessian_pooled_linear needs targets with closed-form second derivatives")
    R, D, h, w = F.shape
    L = h * w
    W = split.linear.weight  # (C, D)
    with torch.no_grad():
        x = split.pool(F)
        z = split.rest(x)  # (R, C)
        ids = torch.arange(R, device=F.device)
        grads = per_location(targets.through_linear(W, z, ids), h, w)[..., 0, 0]  # (R, T, D): d g / d F_ij
        flat = F.reshape(R, D, L)
        first = torch.bmm(grads, flat)  # (R, T, L): gradient x activation
        u = torch.matmul(flat.transpose(1, 2), W.T) / L  # (R, L, C): W F_ij / L
        z_l, u_l, ids_l = z.repeat_interleave(L, 0), u.reshape(R * L, -1), ids.repeat_interleave(L)
        quad = targets.second_along(z_l, u_l, ids_l).reshape(R, L, -1).transpose(1, 2)  # (R, T, L): u^T S u
        maps = (first + 0.5 * quad).reshape(R, -1, h, w)
        if not split_last:
            return maps
        back = (targets.last_along(z_l, u_l, ids_l) @ W).reshape(R, L, D).transpose(1, 2) / L  # (R, D, L)
        return maps, grads[:, -1, :, None, None] * F + 0.5 * (flat * back).reshape(R, D, h, w)
