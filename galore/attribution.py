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

from typing import Callable

import torch

from .options import Attribution

TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, D, h, w), ids (N,) -> (N, T)
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


GRADIENT_ONLY = (Attribution.GRADIENT_X_ACTIVATION, Attribution.GRAD_CAM)  # need only d fn / d F at F itself


def attribute(method: Attribution, fn: TargetFn, F: torch.Tensor, ig_steps: int = 50,
              split_last: bool = False, grads: torch.Tensor | None = None) -> Maps:
    """Dispatch on ``method``: (R, D, h, w) -> raw maps (R, T, h, w) [, last target per channel (R, D, h, w)].
    grads: precomputed d fn / d F (R, T, D, h, w), used by the GRADIENT_ONLY methods."""
    if method is Attribution.GRADIENT_X_ACTIVATION:
        return gradient_x_activation(fn, F, split_last, grads)
    if method is Attribution.GRAD_CAM:
        return grad_cam(fn, F, split_last, grads)
    if method is Attribution.INTEGRATED_GRADIENTS:
        return integrated_gradients(fn, F, steps=ig_steps, split_last=split_last)
    if method is Attribution.GRADIENT_HESSIAN:
        return gradient_hessian(fn, F, split_last=split_last)
    raise ValueError(f"unknown attribution {method}")
