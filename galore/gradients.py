"""The gradients every attribution function shares: many targets' gradients in ONE batched backward, and the types
of the target functions they differentiate.

Example:
    >>> import torch
    >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    >>> values = torch.stack([x[:, 0] * x[:, 1], x[:, 0] ** 2], dim=1)   # (R, T) = (1, 2)
    >>> batched_vjp([values], [x])[0]                                     # (R, T, 2): rows d values[:, t] / d x
    tensor([[[2., 1.],
             [2., 0.]]])
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N, D, h, w), ids (N,) -> (N, T)
LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # logits (N, C), ids (N,) -> (N, T)


@runtime_checkable
class CurvedLogitsFn(Protocol):
    """A LogitsFn that knows its own second derivatives in the logits (``galore.confidence.Targets``): with it the
    structured gradient-Hessian takes closed forms instead of two nested forward-mode products per call."""

    def __call__(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor: ...

    def second_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """u^T S_t u per target t: z, u (N, C), ids (N,) -> (N, T)."""

    def last_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """S_last u, the last target's Hessian times u: (N, C)."""


@runtime_checkable
class LinearLogitsFn(Protocol):
    """A LogitsFn that knows its own gradients through a Linear, logits z = x W^T + b (``galore.confidence.Targets``):
    a head that is pooling then one Linear then takes them in closed form, without a backward."""

    def __call__(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor: ...

    def through_linear(self, W: torch.Tensor, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """d values[n, t] / d x[n]: W (C, D), z (N, C), ids (N,) -> (N, T, D)."""

    def mean_through_linear(self, W: torch.Tensor, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The same gradients averaged over S points of each row's path: z (R, S, C), ids (R,) -> (R, T, D)."""


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
