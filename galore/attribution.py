"""Attribution functions a(.) over a feature map F, from head-only gradients, batched over all targets (§V-A).

Every function takes ``fn(f, ids)`` mapping features ``f`` ``(N, D, h, w)`` of rows ``ids`` ``(N,)`` (indices into
F's rows, so ``fn`` knows each row's targets) to target values ``(N, T)`` (rows independent, e.g. the head followed
by a per-row gather of logits) and ``F`` ``(R, D, h, w)``. It returns raw maps ``(R, T, h, w)``, before clipping or
normalisation, and with ``split_last=True`` also the last target's per-channel contributions ``(R, D, h, w)``
(the engine clips the confidence map per channel). All R x T gradients come from ONE head forward over the R rows
and ONE batched vector-Jacobian product over the T targets (``is_grads_batched``).

Example:
    >>> import torch
    >>> head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> F = torch.rand(2, 4, 5, 5)
    >>> maps = gradient_x_activation(lambda f, ids: head(f)[:, :2], F)   # targets: classes 0 and 1
    >>> maps.shape
    torch.Size([2, 2, 5, 5])
"""
from __future__ import annotations

import operator
import weakref
from typing import Callable

import torch
from torch import nn

from .options import Attribution

TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, D, h, w), ids (N,) -> (N, T)
LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # logits (N, C), ids (N,) -> (N, T)
Maps = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def target_gradients(fn: TargetFn, F: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    """d fn(F)[r, t] / d F[r] for every row r and target t: (R, D, h, w) -> (R, T, D, h, w).

    One head forward on the R rows; the T one-hot cotangents go through one batched backward (rows are independent,
    so cotangent t gives every row's gradient of its own target t)."""
    R = F.shape[0]
    ids = torch.arange(R, device=F.device) if ids is None else ids
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad():
        values = fn(leaf, ids)  # (R, T)
    return batched_vjp([values], [leaf])[0]


def batched_vjp(values: list[torch.Tensor], leaves: list[torch.Tensor], retain_graph: bool = False
                ) -> list[torch.Tensor]:
    """Gradients of target values [(R_i, T)] (row r of values[i] depends only on row r of leaves[i]) with respect to
    their leaves [(R_i, D, h, w)], for all T targets in ONE batched backward: -> [(R_i, T, D, h, w)]."""
    T = values[0].shape[1]
    eye = torch.eye(T, device=values[0].device, dtype=values[0].dtype)
    cotangents = [eye[:, None, :].expand(T, v.shape[0], T) for v in values]  # (T, R_i, T)
    with torch.enable_grad():
        grads = torch.autograd.grad(values, leaves, grad_outputs=cotangents, is_grads_batched=True,
                                    allow_unused=True, retain_graph=retain_graph)
    return [torch.zeros((leaf.shape[0], T) + leaf.shape[1:], device=leaf.device, dtype=leaf.dtype) if g is None
            else g.transpose(0, 1) for g, leaf in zip(grads, leaves)]  # None: the targets do not depend on F


def _out(contrib: torch.Tensor, split_last: bool) -> Maps:
    """Per-channel contributions (R, T, D, h, w) -> summed maps (R, T, h, w) [, last target's (R, D, h, w)]."""
    maps = contrib.sum(2)
    return (maps, contrib[:, -1]) if split_last else maps


def gradient_x_activation(fn: TargetFn, F: torch.Tensor, split_last: bool = False,
                          grads: torch.Tensor | None = None) -> Maps:
    """Eq. (18): a_ij = <grad_F g_p, F>_ij, summed over channels. (R, D, h, w) -> (R, T, h, w).

    grads: d fn / d F (R, T, D, h, w) when the caller already has them (a head pass it took for the prediction)."""
    grads = target_gradients(fn, F) if grads is None else grads
    return _out(grads * F[:, None], split_last)


def grad_cam(fn: TargetFn, F: torch.Tensor, split_last: bool = False, grads: torch.Tensor | None = None) -> Maps:
    """Eq. (20) before its ReLU: sum_k w_k F_ijk with w_k the spatial mean of the gradient.

    The ReLU of eq. (20) is the engine's negative clipping (on by default), so the raw map stays comparable
    with Captum's ``LayerGradCam(relu_attributions=False)``.
    """
    grads = target_gradients(fn, F) if grads is None else grads
    weights = grads.mean(dim=(3, 4), keepdim=True)  # (R, T, D, 1, 1)
    return _out(weights * F[:, None], split_last)


def integrated_gradients(fn: TargetFn, F: torch.Tensor, steps: int = 50, chunk: int = 10,
                         split_last: bool = False) -> Maps:
    """Eq. (19) with zero reference F^0 = 0: (F / Omega) . sum_{k=1..Omega} grad g_p(k/Omega F), per location.

    Steps are processed ``chunk`` at a time to bound memory: (R, D, h, w) -> (R, T, h, w).
    """
    R, D, h, w = F.shape
    total = None
    for start in range(1, steps + 1, chunk):
        alphas = torch.arange(start, min(start + chunk, steps + 1), device=F.device, dtype=F.dtype) / steps
        K = alphas.numel()
        path = (alphas[:, None, None, None, None] * F[None]).reshape(K * R, D, h, w)  # (K*R, D, h, w)
        grads = target_gradients(fn, path, torch.arange(R, device=F.device).repeat(K))  # (K*R, T, D, h, w)
        summed = grads.reshape((K, R) + grads.shape[1:]).sum(0)  # (R, T, D, h, w)
        total = summed if total is None else total + summed
    return _out(total / steps * F[:, None], split_last)


def gradient_hessian(fn: TargetFn, F: torch.Tensor, locations_per_pass: int = 16, split_last: bool = False) -> Maps:
    """NeurIPS 2019 eq. (2): a_ij = grad_ij^T F_ij + 1/2 F_ij^T H_ij F_ij, H_ij the (D x D) Hessian block at (i, j).

    The quadratic term uses Hessian-vector products with v = F restricted to one location, batched over
    ``locations_per_pass`` locations per double-backward (``is_grads_batched``); never one call per Hessian entry.
    Channel k contributes grad_k F_k + 1/2 F_k (H_ij F_ij)_k. Each target needs its own Hessian, so here F is
    replicated to (R*T) rows, row (r, t) carrying target t only.
    """
    R, D, h, w = F.shape
    ids = torch.arange(R, device=F.device)
    with torch.no_grad():
        T = fn(F[:1], ids[:1]).shape[1]
    Frep = F.detach()[:, None].expand(R, T, D, h, w).reshape(R * T, D, h, w).clone().requires_grad_(True)
    with torch.enable_grad():
        own = fn(Frep, ids.repeat_interleave(T)).reshape(R, T, T).diagonal(dim1=1, dim2=2)  # (R, T)
        (grads,) = torch.autograd.grad(own.sum(), Frep, create_graph=True, allow_unused=True)
    if grads is None:
        grads = torch.zeros_like(Frep)
    Fd = Frep.detach().reshape(-1, D, h * w)  # (R*T, D, h*w)
    quad = torch.zeros_like(Fd)  # (R*T, D, h*w): F_k (H_ij F_ij)_k per location
    if grads.requires_grad:
        for start in range(0, h * w, locations_per_pass):
            locs = torch.arange(start, min(start + locations_per_pass, h * w), device=F.device)
            K = locs.numel()
            v = torch.zeros((K,) + Fd.shape, device=F.device, dtype=F.dtype)  # (K, R*T, D, h*w)
            v[torch.arange(K, device=F.device), :, :, locs] = Fd[:, :, locs].permute(2, 0, 1)
            (hvp,) = torch.autograd.grad(grads, Frep, grad_outputs=v.reshape((K,) + Frep.shape),
                                         retain_graph=True, is_grads_batched=True, allow_unused=True)
            if hvp is None:
                break
            hvp = hvp.reshape(K, -1, D, h * w)[torch.arange(K, device=F.device), :, :, locs]  # (K, R*T, D)
            quad[:, :, locs] = (hvp * Fd[:, :, locs].permute(2, 0, 1)).permute(1, 2, 0)
    contrib = grads.detach() * Frep.detach() + 0.5 * quad.reshape(Frep.shape)  # (R*T, D, h, w)
    return _out(contrib.reshape(R, T, D, h, w), split_last)


# Operations a head may be built from for its logits to be piecewise linear in F (their Hessian zero almost
# everywhere): the allow-list ``piecewise_linear`` checks the head's traced graph against. Dropout and BatchNorm only
# in eval mode (identity and an affine map).
LINEAR_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                  nn.Flatten, nn.Linear, nn.Conv2d, nn.Identity)
EVAL_MODULES = (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)
LINEAR_FUNCTIONS = {torch.flatten, torch.relu, torch.add, operator.add, operator.getitem,
                    nn.functional.relu, nn.functional.adaptive_avg_pool2d, nn.functional.avg_pool2d,
                    nn.functional.max_pool2d, nn.functional.linear}
LINEAR_METHODS = {"clone", "view", "flatten", "reshape", "relu", "add", "size", "contiguous"}
KINK_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AdaptiveMaxPool2d)  # the allow-list's piecewise, not affine,
KINK_TARGETS = {torch.relu, nn.functional.relu, nn.functional.max_pool2d, "relu"}  # members
TANGENT_VALUES = 1 << 24  # float values of one pass's location tangents (64 MB in float32)
_CHECKED: "weakref.WeakKeyDictionary[nn.Module, tuple[bool, bool]]" = weakref.WeakKeyDictionary()


def piecewise_linear(head: nn.Module) -> bool:
    """Whether the head's traced graph (torch.fx) uses only the allow-listed operations above, so its logits are
    piecewise linear in F. A head that does not trace, or uses anything else (hardswish, sigmoid, a product of two
    tensors), is not. Cached per head (a head in train mode is re-checked: it can change)."""
    return _check(head)[0]


def affine(head: nn.Module) -> bool:
    """Whether the head is piecewise linear with a single piece: no ReLU or max pooling (ResNet's avgpool + fc)."""
    return _check(head)[1]


def _check(head: nn.Module) -> tuple[bool, bool]:
    known = _CHECKED.get(head)
    if known is not None and not head.training:
        return known
    try:
        graph = (head if isinstance(head, torch.fx.GraphModule) else torch.fx.symbolic_trace(head)).graph
    except Exception:  # noqa: BLE001 - not traceable: not provably piecewise linear
        known = (False, False)
    else:
        modules = dict(head.named_modules())
        ops = [_op(node, modules) for node in graph.nodes]
        linear = all(_allowed(op, node) for op, node in zip(ops, graph.nodes))
        known = (linear, linear and not any(isinstance(op, KINK_MODULES) or _is_kink(op) for op in ops))
    _CHECKED[head] = known
    return known


def _is_kink(op) -> bool:
    try:
        return op in KINK_TARGETS
    except TypeError:  # unhashable target
        return False


def _op(node: torch.fx.Node, modules: dict[str, nn.Module]):
    return modules.get(str(node.target)) if node.op == "call_module" else node.target


def _allowed(op, node: torch.fx.Node) -> bool:
    if node.op in ("placeholder", "output", "get_attr"):
        return True
    if node.op == "call_module":
        return isinstance(op, LINEAR_MODULES) or (isinstance(op, EVAL_MODULES) and not op.training)
    if node.op == "call_function":
        return op in LINEAR_FUNCTIONS
    return node.op == "call_method" and op in LINEAR_METHODS


def integrated_gradients_affine(head: nn.Module, of_logits: LogitsFn, F: torch.Tensor, steps: int = 50,
                                split_last: bool = False) -> Maps:
    """``integrated_gradients`` (eq. 19, F^0 = 0) for an affine head z(F) = J F + b (``affine``): J is the same at
    every point of the path, so sum_k grad_F g(z(a_k F)) = J^T sum_k grad_z g(z_k), with z_k = z(0) + a_k (z(F) -
    z(0)) on the logits' own line: the steps cost C-dimensional gradients, and F's gradient ONE batched
    vector-Jacobian product over the T targets, as gradient x activation."""
    R = F.shape[0]
    ids = torch.arange(R, device=F.device)
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad():
        z1 = head(leaf)  # (R, C)
    with torch.no_grad():
        z0 = head(torch.zeros_like(F[:1])).expand_as(z1)
        alphas = torch.arange(1, steps + 1, device=F.device, dtype=F.dtype) / steps
        line = (z0[None] + alphas[:, None, None] * (z1.detach() - z0)[None]).reshape(steps * R, -1)
    line.requires_grad_(True)
    with torch.enable_grad():
        values = of_logits(line, ids.repeat(steps))  # (steps * R, T)
    along = batched_vjp([values], [line])[0]  # (steps * R, T, C)
    cot = along.reshape(steps, R, *along.shape[1:]).sum(0).transpose(0, 1)  # (T, R, C)
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(z1, leaf, grad_outputs=cot, is_grads_batched=True)  # (T, R, D, h, w)
    return _out(grads.transpose(0, 1) / steps * F[:, None], split_last)


def gradient_hessian_piecewise_linear(head: nn.Module, of_logits: LogitsFn, F: torch.Tensor,
                                      locations_per_pass: int | None = None, split_last: bool = False) -> Maps:
    """``gradient_hessian`` for a head whose logits z(F) are piecewise linear (``piecewise_linear``): their Hessian
    vanishes almost everywhere, so the Hessian of a target g(z(F)) is J^T S J, J = dz/dF and S = d^2 g / dz^2 (C x C),
    and the quadratic term of NeurIPS 2019 eq. (2) at location (i, j) is F_ij^T H_ij F_ij = u^T S u with u = J F_ij,
    F restricted to (i, j): one forward-mode product per location (batched, ``locations_per_pass`` at a time;
    default: as many as keep the tangents within TANGENT_VALUES),
    then the second directional derivative of g along u (C-dimensional, cheap). A logit target has S = 0 and gets
    gradient x activation exactly. The last target's per-channel terms F_k (H F)_k = F_k (J^T S u)_k take one
    batched vector-Jacobian product of S u per location (only with ``split_last``)."""
    R, D, h, w = F.shape
    L = h * w
    ids = torch.arange(R, device=F.device)
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head(leaf)
        values = of_logits(logits, ids)  # (R, T)
    grads = batched_vjp([values], [leaf], retain_graph=split_last)[0]  # (R, T, D, h, w)
    T = values.shape[1]
    locations_per_pass = locations_per_pass or max(1, min(L, TANGENT_VALUES // max(1, R * D * L)))
    Fd = F.detach().reshape(R, D, L)
    quad = torch.zeros(R, T, L, device=F.device, dtype=F.dtype)  # u^T S_t u per location
    quad_last = torch.zeros(R, D, L, device=F.device, dtype=F.dtype)  # F_k (J^T S_last u)_k
    for start in range(0, L, locations_per_pass):
        locs = torch.arange(start, min(start + locations_per_pass, L), device=F.device)
        K = locs.numel()
        tangent = torch.zeros(K, R, D, L, device=F.device, dtype=F.dtype)  # F at one location each
        tangent[torch.arange(K, device=F.device), :, :, locs] = Fd[:, :, locs].permute(2, 0, 1)
        primal = F.detach().repeat(K, 1, 1, 1)  # (K*R, D, h, w), row k*R + r = F[r]
        z, u = torch.func.jvp(head, (primal,), (tangent.reshape(K * R, D, h, w),))  # (K*R, C) each
        rows = ids.repeat(K)

        def g(logits: torch.Tensor) -> torch.Tensor:
            return of_logits(logits, rows)

        def along_u(logits: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(g, (logits,), (u,))[1]

        z, u = z.detach(), u.detach()
        q = torch.func.jvp(along_u, (z,), (u,))[1]  # (K*R, T): u^T S_t u
        quad[:, :, locs] = q.reshape(K, R, T).permute(1, 2, 0)
        if split_last:
            s_u = torch.func.jvp(torch.func.grad(lambda lg: g(lg)[:, -1].sum()), (z,), (u,))[1]  # (K*R, C)
            with torch.enable_grad():
                (back,) = torch.autograd.grad(logits, leaf, grad_outputs=s_u.reshape(K, R, -1),
                                              is_grads_batched=True, retain_graph=True)  # (K, R, D, h, w)
            back = back.reshape(K, R, D, L)[torch.arange(K, device=F.device), :, :, locs]  # (K, R, D)
            quad_last[:, :, locs] = (back * Fd[:, :, locs].permute(2, 0, 1)).permute(1, 2, 0)
    maps = (grads * F[:, None]).sum(2) + 0.5 * quad.reshape(R, T, h, w)
    if not split_last:
        return maps
    return maps, grads[:, -1] * F + 0.5 * quad_last.reshape(R, D, h, w)


GRADIENT_ONLY = (Attribution.GRADIENT_X_ACTIVATION, Attribution.GRAD_CAM)  # need only d fn / d F at F itself


def attribute(method: Attribution, fn: TargetFn, F: torch.Tensor, ig_steps: int = 50,
              split_last: bool = False, grads: torch.Tensor | None = None,
              parts: tuple[nn.Module, LogitsFn] | None = None) -> Maps:
    """Dispatch on ``method``: (R, D, h, w) -> raw maps (R, T, h, w) [, last target per channel (R, D, h, w)].
    grads: precomputed d fn / d F (R, T, D, h, w), used by the GRADIENT_ONLY methods. parts: fn as (head, of_logits),
    fn(f, ids) = of_logits(head(f), ids), which lets a piecewise-linear head take the exact structured paths."""
    if method is Attribution.GRADIENT_X_ACTIVATION:
        return gradient_x_activation(fn, F, split_last, grads)
    if method is Attribution.GRAD_CAM:
        return grad_cam(fn, F, split_last, grads)
    if method is Attribution.INTEGRATED_GRADIENTS:
        if parts is not None and affine(parts[0]):
            return integrated_gradients_affine(*parts, F, steps=ig_steps, split_last=split_last)
        return integrated_gradients(fn, F, steps=ig_steps, split_last=split_last)
    if method is Attribution.GRADIENT_HESSIAN:
        if parts is not None and piecewise_linear(parts[0]):
            return gradient_hessian_piecewise_linear(*parts, F, split_last=split_last)
        return gradient_hessian(fn, F, split_last=split_last)
    raise ValueError(f"unknown attribution {method}")
