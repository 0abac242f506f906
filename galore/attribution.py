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

import torch
from torch.overrides import TorchFunctionMode
from torch import nn

from .fx_graph import is_in, node_op
from .gradients import CurvedLogitsFn, LinearLogitsFn, LogitsFn, TargetFn, batched_vjp
from .options import Attribution
from .pooled_head import (gradient_hessian_pooled_linear, path_gradients_pooled_linear, pooled_gradients,
                          pooled_split)

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


def _out(contrib: torch.Tensor, split_last: bool) -> Maps:
    """Per-channel contributions (R, T, D, h, w) -> summed maps (R, T, h, w) [, last target's (R, D, h, w)]."""
    maps = contrib.sum(2)
    return (maps, contrib[:, -1]) if split_last else maps


def _times(weights: torch.Tensor, F: torch.Tensor, split_last: bool) -> Maps:
    """_out(weights * F): weights (R, T, D, h, w), or (R, T, D, 1, 1) the same at every location (a pooled head's
    gradients, Grad-CAM's weights), then summed over channels by one product, never as (R, T, D, h, w)."""
    R, D, h, w = F.shape
    if weights.shape[-2:] != (1, 1) or (h, w) == (1, 1):
        return _out(weights * F[:, None], split_last)
    maps = torch.bmm(weights.reshape(R, -1, D), F.reshape(R, D, h * w)).reshape(R, -1, h, w)  # (R, T, h, w)
    return (maps, weights[:, -1] * F) if split_last else maps


def gradient_x_activation(fn: TargetFn, F: torch.Tensor, split_last: bool = False,
                          grads: torch.Tensor | None = None) -> Maps:
    """Eq. (18): a_ij = <grad_F g_p, F>_ij, summed over channels. (R, D, h, w) -> (R, T, h, w).

    grads: d fn / d F (R, T, D, h, w) when the caller already has them (a head pass it took for the prediction), or
    (R, T, D, 1, 1) when they are the same at every location (``galore.pooled_head``)."""
    grads = target_gradients(fn, F) if grads is None else grads
    return _times(grads, F, split_last)


def grad_cam(fn: TargetFn, F: torch.Tensor, split_last: bool = False, grads: torch.Tensor | None = None) -> Maps:
    """Eq. (20) before its ReLU: sum_k w_k F_ijk with w_k the spatial mean of the gradient.

    The ReLU of eq. (20) is the engine's negative clipping (on by default), so the raw map stays comparable
    with Captum's ``LayerGradCam(relu_attributions=False)``.
    """
    grads = target_gradients(fn, F) if grads is None else grads
    weights = grads.mean(dim=(3, 4), keepdim=True)  # (R, T, D, 1, 1)
    return _times(weights, F, split_last)


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


class _TwiceDifferentiable(TorchFunctionMode):
    """Hardsigmoid and hardswish (MobileNetV3's squeeze-excitation and blocks) as clamp compositions: the same
    values and first derivatives, but a backward that torch can differentiate again (``hardsigmoid_backward`` has
    no derivative), so the gradient-Hessian's double backward runs through such heads.

    Example:
        >>> x = torch.linspace(-4, 4, 9)
        >>> with _TwiceDifferentiable():
        ...     y = torch.nn.functional.hardswish(x)
        >>> torch.equal(y, torch.nn.functional.hardswish(x))
        True
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.hardsigmoid:
            return torch.clamp(args[0] + 3, 0, 6) / 6
        if func is torch.nn.functional.hardswish:
            return args[0] * (torch.clamp(args[0] + 3, 0, 6) / 6)
        return func(*args, **(kwargs or {}))


def gradient_hessian(fn: TargetFn, F: torch.Tensor, locations_per_pass: int | None = None,
                     split_last: bool = False) -> Maps:
    """NeurIPS 2019 eq. (2): a_ij = grad_ij^T F_ij + 1/2 F_ij^T H_ij F_ij, H_ij the (D x D) Hessian block at (i, j).

    Any differentiable head. The gradients come from one batched vector-Jacobian product (as gradient x activation);
    the quadratic term F_ij^T H_ij F_ij is the second derivative of every target along v = F restricted to (i, j),
    so one forward-over-forward product per location gives it for ALL T targets at once (``locations_per_pass``
    locations batched as rows; default: PASS_ROWS rows a pass, the tangents within TANGENT_VALUES), never one
    Hessian-vector product per target. With ``split_last`` the last target's per-channel terms
    F_k (H_ij F_ij)_k (the engine clips the score's map per channel) take one forward-over-reverse product per
    location, for that target only. (R, D, h, w) -> (R, T, h, w) [, (R, D, h, w)].
    """
    R, D, h, w = F.shape
    L = h * w
    ids = torch.arange(R, device=F.device)
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad(), _TwiceDifferentiable():
        values = fn(leaf, ids)  # (R, T)
    grads = batched_vjp([values], [leaf])[0]  # (R, T, D, h, w)
    T = values.shape[1]
    Fd = F.detach().reshape(R, D, L)
    quad = torch.zeros(R, T, L, device=F.device, dtype=F.dtype)  # F_ij^T H_ij F_ij per target and location
    quad_last = torch.zeros(R, D, L, device=F.device, dtype=F.dtype)  # F_k (H_ij F_ij)_k of the last target
    per_pass = locations_per_pass or max(1, min(L, PASS_ROWS // R, TANGENT_VALUES // max(1, R * D * L)))
    for start in range(0, L, per_pass):
        locs = torch.arange(start, min(start + per_pass, L), device=F.device)
        K = locs.numel()
        at_loc = Fd[:, :, locs].permute(2, 0, 1)  # (K, R, D): F at each pass location
        v = torch.zeros(K, R, D, L, device=F.device, dtype=F.dtype)
        v[torch.arange(K, device=F.device), :, :, locs] = at_loc
        v = v.reshape(K * R, D, h, w)  # row k * R + r: F[r] restricted to location locs[k]
        primal, rows = F.detach().repeat(K, 1, 1, 1), ids.repeat(K)

        def g(x: torch.Tensor) -> torch.Tensor:
            return fn(x.clone(), rows)  # clone: a head may apply ReLU in place

        def along_v(x: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(g, (x,), (v,))[1]

        with torch.no_grad(), _TwiceDifferentiable():  # no graph to the head's parameters (func.grad still runs)
            second = torch.func.jvp(along_v, (primal,), (v,))[1]  # (K*R, T): v^T H_t v
            quad[:, :, locs] = second.reshape(K, R, T).permute(1, 2, 0)
            if split_last:
                hv = torch.func.jvp(torch.func.grad(lambda x: g(x)[:, -1].sum()), (primal,), (v,))[1]
                hv = hv.reshape(K, R, D, L)[torch.arange(K, device=F.device), :, :, locs]  # (K, R, D): H v at loc
                quad_last[:, :, locs] = (hv * at_loc).permute(1, 2, 0)
    maps = (grads * F[:, None]).sum(2) + 0.5 * quad.reshape(R, T, h, w)
    if not split_last:
        return maps
    return maps, grads[:, -1] * F + 0.5 * quad_last.reshape(R, D, h, w)


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
PASS_ROWS = 64  # rows (locations x feature rows) of one forward-over-forward pass of the general gradient-Hessian:
# MobileNetV3-small after features.8, 1 thread: 7.8-9.0 s per feature row at 32-64 rows, 19 s at 4, 18 s at 588
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
        ops = [node_op(node, modules) for node in graph.nodes]
        linear = all(_allowed(op, node) for op, node in zip(ops, graph.nodes))
        known = (linear, linear and not any(isinstance(op, KINK_MODULES) or _is_kink(op) for op in ops))
    _CHECKED[head] = known
    return known


def _is_kink(op) -> bool:
    return is_in(op, KINK_TARGETS)


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


def integrated_gradients_first_linear(split: tuple[nn.Module, nn.Linear, nn.Module], of_logits: LogitsFn,
                                     F: torch.Tensor, steps: int = 50, split_last: bool = False) -> Maps:
    """``integrated_gradients`` (eq. 19, F^0 = 0, the same steps a_k = k / Omega, k = 1..Omega) for a head
    tail(linear(pre(F))) whose ``pre`` is positively homogeneous and piecewise linear (``homogeneous_first_linear``:
    VGG16's max pool, average pool, flatten). On the path a F, pre(a F) = a pre(F) and pre's Jacobian P is the same
    at every a > 0 (max pooling routes to the same argmax, ReLU keeps its pattern), so linear's output lies on the
    line y_k = b + a_k W x, x = pre(F), and

        sum_k grad_F g(a_k F) = P^T W^T sum_k grad_y g(tail(y_k)):

    the steps go through the tail only (VGG16: 4096 -> 4096 -> 1000, all steps in one batch), and W^T (VGG16's
    25088 x 4096) and P^T are applied ONCE, in one batched vector-Jacobian product over the T targets, as gradient x
    activation. No host reads (any device)."""
    pre, linear, tail = split
    R = F.shape[0]
    ids = torch.arange(R, device=F.device)
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad():
        y1 = linear(pre(leaf))  # (R, O)
    with torch.no_grad():
        bias = torch.zeros_like(y1[:1]) if linear.bias is None else linear.bias.to(y1.dtype)  # y(0): pre(0) = 0
        alphas = torch.arange(1, steps + 1, device=F.device, dtype=F.dtype).reshape((-1,) + (1,) * y1.dim()) / steps
        line = (bias + alphas * (y1.detach() - bias)).reshape((steps * R,) + y1.shape[1:])  # row k * R + r
    line.requires_grad_(True)
    with torch.enable_grad():
        values = of_logits(tail(line.clone()), ids.repeat(steps))  # (steps * R, T); clone: tail's in-place ReLU
    along = batched_vjp([values], [line])[0]  # (steps * R, T, O)
    cot = along.reshape(steps, R, *along.shape[1:]).sum(0).transpose(0, 1)  # (T, R, O)
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(y1, leaf, grad_outputs=cot, is_grads_batched=True)  # (T, R, D, h, w)
    return _out(grads.transpose(0, 1) / steps * F[:, None], split_last)


def gradient_hessian_piecewise_linear(head: nn.Module, of_logits: LogitsFn, F: torch.Tensor,
                                      locations_per_pass: int | None = None, split_last: bool = False) -> Maps:
    """``gradient_hessian`` for a head whose logits z(F) are piecewise linear (``piecewise_linear``): their Hessian
    vanishes almost everywhere, so the Hessian of a target g(z(F)) is J^T S J, J = dz/dF and S = d^2 g / dz^2 (C x C),
    and the quadratic term of NeurIPS 2019 eq. (2) at location (i, j) is F_ij^T H_ij F_ij = u^T S u with u = J F_ij,
    F restricted to (i, j), then the second directional derivative of g along u (C-dimensional: closed forms where
    ``of_logits`` is a ``CurvedLogitsFn`` such as ``galore.confidence.Targets``, else two nested forward-mode
    products). A logit target has S = 0 and gets gradient x activation exactly. The last target's per-channel terms
    F_k (H F)_k = F_k (J^T S u)_k take the transposed products of S u (only with ``split_last``).

    The u come from ``_tangents_through_first_linear`` where the head starts with channel-wise operations and a Linear
    (VGG16: max pool, average pool, flatten, Linear; ResNet-50: average pool, flatten, fc) and F is on the CPU, else
    (or when ``locations_per_pass`` is given) from one forward-mode product per location through the whole head
    (``_tangents_by_jvp``, ``locations_per_pass`` at a time; default: as many as keep the tangents within
    TANGENT_VALUES)."""
    R, D, h, w = F.shape
    L = h * w
    ids = torch.arange(R, device=F.device)
    leaf = F.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head(leaf)
        values = of_logits(logits, ids)  # (R, T)
    grads = batched_vjp([values], [leaf], retain_graph=split_last)[0]  # (R, T, D, h, w)
    T = values.shape[1]
    split = first_linear(head)
    if split is not None and locations_per_pass is None and F.device.type == "cpu":
        # its gather size (the most locations reaching one position) is read on the host: free on the CPU, a sync
        # elsewhere, where the per-location products keep the attribution stage free of host reads
        pieces = _tangents_through_first_linear(*split, F, logits.detach())
    else:
        per_pass = locations_per_pass or max(1, min(L, TANGENT_VALUES // max(1, R * D * L)))
        pieces = _tangents_by_jvp(head, F, logits, leaf, per_pass)
    quad = torch.zeros(R, T, L, device=F.device, dtype=F.dtype)  # u^T S_t u per location
    quad_last = torch.zeros(R, D, L, device=F.device, dtype=F.dtype)  # F_k (J^T S_last u)_k
    along = of_logits if isinstance(of_logits, CurvedLogitsFn) else _ByForwardMode(of_logits)
    for rows, locs, z, u, back in pieces:  # location locs[n] of row rows[n]: z, u (n, C)
        quad[rows, :, locs] = along.second_along(z, u, rows)  # (n, T): u^T S_t u
        if split_last:
            quad_last[rows, :, locs] = back(along.last_along(z, u, rows))  # S_last u (n, C) -> (n, D)
    maps = (grads * F[:, None]).sum(2) + 0.5 * quad.reshape(R, T, h, w)
    if not split_last:
        return maps
    return maps, grads[:, -1] * F + 0.5 * quad_last.reshape(R, D, h, w)


class _ByForwardMode:
    """A LogitsFn's second derivatives along u by two nested forward-mode products (any differentiable target)."""

    def __init__(self, of_logits: LogitsFn):
        self.of_logits = of_logits

    def second_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        def along_u(lg: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(lambda x: self.of_logits(x, ids), (lg,), (u,))[1]
        return torch.func.jvp(along_u, (z,), (u,))[1]

    def last_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        last = torch.func.grad(lambda lg: self.of_logits(lg, ids)[:, -1].sum())
        return torch.func.jvp(last, (z,), (u,))[1]


def _tangents_by_jvp(head: nn.Module, F: torch.Tensor, logits: torch.Tensor, leaf: torch.Tensor, per_pass: int):
    """u = J F_ij for ``per_pass`` locations at a time by forward-mode products through the whole head; yields
    (rows, locations, z, u, back) with back(v) = F_k (J^T v)_k at each one's own location, (n, C) -> (n, D)."""
    R, D, h, w = F.shape
    L = h * w
    Fd = F.detach().reshape(R, D, L)
    for start in range(0, L, per_pass):
        locs = torch.arange(start, min(start + per_pass, L), device=F.device)
        K = locs.numel()
        tangent = torch.zeros(K, R, D, L, device=F.device, dtype=F.dtype)  # F at one location each
        tangent[torch.arange(K, device=F.device), :, :, locs] = Fd[:, :, locs].permute(2, 0, 1)
        primal = F.detach().repeat(K, 1, 1, 1)  # (K*R, D, h, w), row k*R + r = F[r]
        z, u = torch.func.jvp(head, (primal,), (tangent.reshape(K * R, D, h, w),))  # (K*R, C) each

        def back(v: torch.Tensor, locs=locs, K=K) -> torch.Tensor:
            with torch.enable_grad():
                (out,) = torch.autograd.grad(logits, leaf, grad_outputs=v.reshape(K, R, -1),
                                             is_grads_batched=True, retain_graph=True)  # (K, R, D, h, w)
            out = out.reshape(K, R, D, L)[torch.arange(K, device=F.device), :, :, locs]  # (K, R, D)
            return (out * Fd[:, :, locs].permute(2, 0, 1)).reshape(K * R, D)
        yield (torch.arange(R, device=F.device).repeat(K), locs.repeat_interleave(R), z.detach(), u.detach(), back)


def _tangents_through_first_linear(pre: nn.Module, linear: nn.Linear, tail: nn.Module, F: torch.Tensor,
                                   logits: torch.Tensor):
    """u = J F_ij for all locations of one row at a time, for a head tail(linear(pre(F))) with ``pre`` channel-wise
    (``first_linear``). The tangent of F_ij after ``pre`` touches only the positions p its pooling windows reach
    (max pooling: with the primal's argmax); pre's per-channel Jacobian comes from P batched vector-Jacobian
    products (one per position, not one dense tangent per location). Linear's tangents are, for each p, the few
    locations reaching it times W[:, :, p] (O x D): one batched product over the positions, about the cost of ONE
    dense product W x. An empty tail (the Linear is the head's last operation) passes them on as u; otherwise the
    (L, O) tangents go through ``tail`` in one batched forward-mode product at the primal (its ReLU pattern).
    Yields as ``_tangents_by_jvp``, one row at a time."""
    R, D, h, w = F.shape
    L = h * w
    Fd = F.detach()
    eye_locs = torch.arange(L, device=F.device)
    for r in range(R):
        leaf = Fd[r:r + 1].clone().requires_grad_(True)
        with torch.enable_grad():
            x = pre(leaf.clone())  # (1, M); clone: pre may apply ReLU in place
        with torch.no_grad():
            y1 = linear(x.detach())  # (1, O)
        M = x.shape[-1]
        if x.dim() != 2 or M % D or linear.weight.shape[1] != M:
            raise ValueError(f"first_linear: pre gives {tuple(x.shape)}, not (1, {D} x positions)")
        P = M // D
        # pre is channel-wise, so the cotangent with ones at position p of EVERY channel gives each channel's own
        # d pre_{d,p} / d F_{d,l}: P batched vector-Jacobian products give pre's whole Jacobian (P, D, L), and the
        # tangent of F restricted to l at position p is F_{d,l} times it
        Qp = torch.empty(P, L, D, device=F.device, dtype=F.dtype)  # Qp[p, l] = pre's tangent along F at l, at p
        per_pass = max(1, TANGENT_VALUES // (D * L))
        for start in range(0, P, per_pass):
            ps = torch.arange(start, min(start + per_pass, P), device=F.device)
            cot = torch.zeros(ps.numel(), 1, D, P, device=F.device, dtype=F.dtype)
            cot[torch.arange(ps.numel(), device=F.device), :, :, ps] = 1
            with torch.enable_grad():
                (jac,) = torch.autograd.grad(x, leaf, grad_outputs=cot.reshape(-1, 1, M), is_grads_batched=True,
                                             retain_graph=True)  # (k, 1, D, h, w)
            Qp[ps] = (jac.reshape(-1, D, L) * Fd[r].reshape(1, D, L)).transpose(1, 2)
        reach = Qp.ne(0).any(2)  # (P, L): location l's tangent reaches position p
        K = int(reach.sum(1).max())
        near = reach.to(F.dtype).topk(max(K, 1), dim=1).indices  # (P, K) locations reaching each position
        Qn = Qp.gather(1, near[..., None].expand(-1, -1, D))  # (P, K, D)
        Wp = _by_position(linear, D)  # (P, D, O)
        t1 = torch.zeros(L, Wp.shape[-1], device=F.device, dtype=F.dtype).index_add_(
            0, near.reshape(-1), torch.bmm(Qn, Wp).reshape(-1, Wp.shape[-1]))  # (L, O)
        def at(y: torch.Tensor) -> torch.Tensor:
            return tail(y.clone())  # the tail may apply ReLU in place

        bare = _passes_through(tail)  # ResNet-50: the Linear is the last operation, its tangents are u
        u = t1 if bare else torch.func.vmap(lambda t: torch.func.jvp(at, (y1,), (t[None],))[1][0])(t1)  # (L, C)

        def back(v: torch.Tensor, at=at, y1=y1, near=near, Qn=Qn, Wp=Wp, bare=bare) -> torch.Tensor:
            if bare:
                s = v
            else:
                _, vjp = torch.func.vjp(at, y1)
                s = torch.func.vmap(lambda c: vjp(c[None])[0][0])(v)  # (L, O): tail^T v
            G = torch.bmm(s[near], Wp.transpose(1, 2)) * Qn  # (P, K, D)
            return torch.zeros(L, D, device=F.device, dtype=F.dtype).index_add_(0, near.reshape(-1), G.reshape(-1, D))
        yield (torch.full((L,), r, device=F.device), eye_locs, logits[r:r + 1].expand(L, -1).clone(), u.detach(), back)


def _passes_through(module: nn.Module) -> bool:
    """Whether a traced module (``first_linear``'s tail) returns its input unchanged: no operation in its graph."""
    return isinstance(module, torch.fx.GraphModule) and all(n.op in ("placeholder", "output")
                                                             for n in module.graph.nodes)


_BY_POSITION: "weakref.WeakKeyDictionary[nn.Linear, tuple]" = weakref.WeakKeyDictionary()


def _by_position(linear: nn.Linear, D: int) -> torch.Tensor:
    """linear's weight (O, D x P) laid out by input position, (P, D, O) contiguous, so that each position's (D, O)
    block is one dense matrix. Relaying out costs seconds (a strided transpose): cached per Linear while its weight
    is unchanged, at the cost of a second copy of the weight (VGG16's first Linear: 411 MB in float32)."""
    weight = linear.weight
    key = (weight.data_ptr(), weight._version, D, weight.dtype)
    known = _BY_POSITION.get(linear)
    if known is None or known[0] != key:
        with torch.no_grad():
            known = (key, weight.detach().reshape(weight.shape[0], D, -1).permute(2, 1, 0).contiguous())
        _BY_POSITION[linear] = known
    return known[1]


# Channel-wise operations (each output channel a function of the same input channel, no mixing) a head may apply to F
# before its first Linear for ``first_linear`` to split it there.
CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                       nn.Flatten, nn.Identity, nn.Dropout, nn.BatchNorm2d)
CHANNELWISE_TARGETS = {torch.flatten, torch.relu, nn.functional.relu, nn.functional.adaptive_avg_pool2d,
                       nn.functional.avg_pool2d, nn.functional.max_pool2d, "clone", "flatten", "relu", "contiguous"}
_SPLITS: "weakref.WeakKeyDictionary[nn.Module, tuple | None]" = weakref.WeakKeyDictionary()


def first_linear(head: nn.Module) -> tuple[nn.Module, nn.Linear, nn.Module] | None:
    """A piecewise-linear head (``piecewise_linear``) split as tail(linear(pre(F))) at the first Linear of its traced
    graph, where everything before it is channel-wise (CHANNELWISE_*, allow-listed as ``_allowed``) and nothing after
    it reads a value from before it; None otherwise. Cached per head in eval mode."""
    if head in _SPLITS and not head.training:
        return _SPLITS[head]
    split = None
    if piecewise_linear(head):
        gm = head if isinstance(head, torch.fx.GraphModule) else torch.fx.symbolic_trace(head)
        modules = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        at = next((i for i, n in enumerate(nodes)
                   if n.op == "call_module" and isinstance(modules[n.target], nn.Linear)), None)
        if at is not None and nodes[0].op == "placeholder" and all(n.op != "get_attr" for n in nodes):
            before, lin, after = nodes[1:at], nodes[at], nodes[at + 1:-1]
            channelwise = all(_allowed(node_op(n, modules), n) and (
                isinstance(node_op(n, modules), CHANNELWISE_MODULES) if n.op == "call_module" else
                is_in(node_op(n, modules), CHANNELWISE_TARGETS)) for n in before)
            inside = set(after) | {lin}
            if (channelwise and len(lin.args) == 1 and not lin.kwargs and lin.args[0] in set(before) | {nodes[0]}
                    and all(set(n.all_input_nodes) <= inside for n in after + [nodes[-1]])
                    and len(nodes[-1].all_input_nodes) == 1):
                split = (_subgraph(gm, nodes[0], before, lin.args[0]), modules[lin.target],
                         _subgraph(gm, lin, after, nodes[-1].all_input_nodes[0]))
    _SPLITS[head] = split
    return split


# Channel-wise operations that are also positively homogeneous, op(a x) = a op(x) for a > 0, with a Jacobian that
# does not change under a positive scale (no ReLU6's clamp at 6, no BatchNorm's shift): ``homogeneous_first_linear``.
HOMOGENEOUS_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                       nn.Identity, nn.Dropout)
HOMOGENEOUS_TARGETS = CHANNELWISE_TARGETS


def homogeneous_first_linear(head: nn.Module) -> tuple[nn.Module, nn.Linear, nn.Module] | None:
    """``first_linear``'s split tail(linear(pre(F))) where every operation of ``pre`` in the traced graph is
    positively homogeneous (HOMOGENEOUS_*; Dropout in eval mode only), so pre(a F) = a pre(F) with the same Jacobian
    for every a > 0 (``integrated_gradients_first_linear``); None otherwise."""
    split = first_linear(head)
    if split is None:
        return None
    modules = dict(split[0].named_modules())
    for node in split[0].graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        op = node_op(node, modules)
        if node.op == "call_module":
            if not isinstance(op, HOMOGENEOUS_MODULES) or (isinstance(op, nn.Dropout) and op.training):
                return None
        elif not is_in(op, HOMOGENEOUS_TARGETS):
            return None
    return split


def _subgraph(gm: torch.fx.GraphModule, start: torch.fx.Node, nodes: list[torch.fx.Node], end: torch.fx.Node
              ) -> torch.fx.GraphModule:
    """The part of gm's graph from ``start`` (its input) through ``nodes`` to ``end`` (its output), as a module."""
    graph = torch.fx.Graph()
    env = {start: graph.placeholder("x")}
    for n in nodes:
        env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(env[end])
    return torch.fx.GraphModule(gm, graph)


GRADIENT_ONLY = (Attribution.GRADIENT_X_ACTIVATION, Attribution.GRAD_CAM)  # need only d fn / d F at F itself


def attribute(method: Attribution, fn: TargetFn, F: torch.Tensor, ig_steps: int = 50,
              split_last: bool = False, grads: torch.Tensor | None = None,
              parts: tuple[nn.Module, LogitsFn] | None = None) -> Maps:
    """Dispatch on ``method``: (R, D, h, w) -> raw maps (R, T, h, w) [, last target per channel (R, D, h, w)].
    grads: precomputed d fn / d F (R, T, D, h, w), used by the GRADIENT_ONLY methods. parts: fn as (head, of_logits),
    fn(f, ids) = of_logits(head(f), ids), which lets a piecewise-linear head take the exact structured paths, and a
    head that starts with global average pooling take its gradients through the rest of the head only."""
    if method in GRADIENT_ONLY and grads is None and parts is not None:
        pooled = pooled_split(parts[0])
        grads = pooled_gradients(pooled, parts[1], F) if pooled is not None else None
    if method is Attribution.GRADIENT_X_ACTIVATION:
        return gradient_x_activation(fn, F, split_last, grads)
    if method is Attribution.GRAD_CAM:
        return grad_cam(fn, F, split_last, grads)
    if method is Attribution.INTEGRATED_GRADIENTS:
        pooled = pooled_split(parts[0]) if parts is not None else None
        if pooled is not None and pooled.linear is not None:
            return _times(path_gradients_pooled_linear(pooled, parts[1], F, steps=ig_steps), F, split_last)
        if parts is not None and affine(parts[0]):
            return integrated_gradients_affine(*parts, F, steps=ig_steps, split_last=split_last)
        split = homogeneous_first_linear(parts[0]) if parts is not None else None
        if split is not None:
            return integrated_gradients_first_linear(split, parts[1], F, steps=ig_steps, split_last=split_last)
        return integrated_gradients(fn, F, steps=ig_steps, split_last=split_last)
    if method is Attribution.GRADIENT_HESSIAN:
        pooled = pooled_split(parts[0]) if parts is not None else None
        if (pooled is not None and pooled.linear is not None and isinstance(parts[1], CurvedLogitsFn)
                and isinstance(parts[1], LinearLogitsFn)):
            return gradient_hessian_pooled_linear(pooled, parts[1], F, split_last=split_last)
        if parts is not None and piecewise_linear(parts[0]):
            return gradient_hessian_piecewise_linear(*parts, F, split_last=split_last)
        return gradient_hessian(fn, F, split_last=split_last)
    raise ValueError(f"unknown attribution {method}")
