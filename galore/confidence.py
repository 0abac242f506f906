"""Confidence scores s(x) (§V-B) and class targets h_y, as differentiable functions of the head's output.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> round(float(softmax_score(logits)), 4), round(float(certainty_score(logits)), 4)
    (0.787, 0.3942)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .options import Score, Target


def softmax_score(logits: torch.Tensor) -> torch.Tensor:
    """Eq. (21): s^s = max_y h_y(x). (N, C) -> (N,)."""
    return logits.softmax(-1).max(-1).values


def certainty_score(logits: torch.Tensor) -> torch.Tensor:
    """Eq. (22): s^c = 1 + (1 / log C) sum_y h_y log h_y. (N, C) -> (N,)."""
    C = logits.shape[-1]
    p, logp = logits.softmax(-1), logits.log_softmax(-1)
    return 1 + (p * logp).sum(-1) / math.log(C)


def easiness_score(hardness_logit: torch.Tensor) -> torch.Tensor:
    """Eq. (23): s^e = 1 - s^hp, s^hp the hardness predictor's sigmoid output. (N, 1) -> (N,)."""
    return 1 - torch.sigmoid(hardness_logit[:, 0])


SELF_REFERENTIAL = {Score.SOFTMAX: softmax_score, Score.CERTAINTY: certainty_score}


def class_values(logits: torch.Tensor, target: Target) -> torch.Tensor:
    """What a class attribution differentiates: the logit (default) or the probability h_y. (N, C) -> (N, C)."""
    return logits if target is Target.LOGIT else logits.softmax(-1)


@dataclass(frozen=True)
class _Along:
    """The softmax p = softmax(z) and its derivatives along a direction u, (N, C) each: d = u - E_p[u], V = E_p[d^2]
    (N, 1). Along u, d p_y = p_y d_y and d log p_y = d_y, so every second derivative below is a closed form of these."""

    p: torch.Tensor
    logp: torch.Tensor
    d: torch.Tensor
    V: torch.Tensor

    @classmethod
    def at(cls, z: torch.Tensor, u: torch.Tensor) -> "_Along":
        p, logp = z.softmax(-1), z.log_softmax(-1)
        d = u - (p * u).sum(-1, keepdim=True)
        return cls(p, logp, d, (p * d * d).sum(-1, keepdim=True))

    def probability(self, y: torch.Tensor) -> torch.Tensor:
        """u^T S u of h_y: p_y (d_y^2 - V). y (N, K) class ids -> (N, K)."""
        d_y = self.d.gather(1, y)
        return self.p.gather(1, y) * (d_y * d_y - self.V)

    def probability_hvp(self, y: torch.Tensor) -> torch.Tensor:
        """S u of h_y, the derivative of grad h_y = p_y (e_y - p) along u: p_y d_y (e_y - p) - p_y p d. y (N,) -> (N, C)."""
        p_y, d_y = self.p.gather(1, y[:, None]), self.d.gather(1, y[:, None])  # (N, 1)
        e_y = torch.zeros_like(self.p).scatter_(1, y[:, None], 1.0)
        return p_y * (d_y * (e_y - self.p) - self.p * self.d)

    def certainty(self) -> torch.Tensor:
        """u^T S u of eq. (22), s = 1 + sum p log p / log C: (V + E_p[(d^2 - V) log p]) / log C. -> (N,)."""
        return (self.V[:, 0] + (self.p * (self.d * self.d - self.V) * self.logp).sum(-1)) / math.log(self.p.shape[-1])

    def certainty_hvp(self) -> torch.Tensor:
        """S u of eq. (22): grad sum p log p = p (log p - m), m = E_p[log p]; along u:
        p (d (log p - m) + d - E_p[d log p]). -> (N, C)."""
        m = (self.p * self.logp).sum(-1, keepdim=True)
        c = (self.p * self.d * self.logp).sum(-1, keepdim=True)
        return self.p * (self.d * (self.logp - m) + self.d - c) / math.log(self.p.shape[-1])


# second derivatives along u: of the class columns (u^T S u for the classes y (N, K) -> (N, K)), keyed as
# class_values (a logit's are zero); of a score column (u^T S u (N,) and S u (N, C)), keyed as SELF_REFERENTIAL
_CLASS_ALONG = {
    Target.LOGIT: lambda a, y: torch.zeros_like(y, dtype=a.p.dtype),
    Target.PROBABILITY: _Along.probability,
}
_SCORE_ALONG = {  # eq. (21) is h_y of the top class y
    Score.SOFTMAX: (lambda a: a.probability(a.p.argmax(-1, keepdim=True))[:, 0],
                    lambda a: a.probability_hvp(a.p.argmax(-1))),
    Score.CERTAINTY: (_Along.certainty, _Along.certainty_hvp),
}


# gradients of the columns with respect to x, for logits z = x W^T + b (W (C, D)), at the softmax p of z
_CLASS_GRADIENT = {  # classes y (N, K) -> (N, K, D): a logit's is its row of W; h_y's is h_y (W_y - p W)
    Target.LOGIT: lambda s, y: s.W[y],
    Target.PROBABILITY: lambda s, y: s.p.gather(1, y)[..., None] * (s.W[y] - s.pW[:, None]),
}
_SCORE_GRADIENT = {  # -> (N, D): eq. (21) is h_y of the top class; eq. (22)'s is (p (log p - E_p[log p])) W / log C
    Score.SOFTMAX: lambda s: _CLASS_GRADIENT[Target.PROBABILITY](s, s.p.argmax(-1, keepdim=True))[:, 0],
    Score.CERTAINTY: lambda s: (s.p * (s.logp - (s.p * s.logp).sum(-1, keepdim=True))) @ s.W / math.log(s.W.shape[0]),
}


# the same gradients averaged over the S points z_k of each row's path (R rows), for integrated gradients (eq. 19)
# through a Linear: linear in the logit-space gradient, so averaged there first and multiplied by W once
def _mean_probability(W: torch.Tensor, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_k p_y,k (W_y - p_k W): p (R, S, C), y (R, K) -> (R, K, D)."""
    R, S, C = p.shape
    p_y = p.gather(2, y[:, None, :].expand(R, S, y.shape[1]))  # (R, S, K)
    return p_y.mean(1)[..., None] * W[y] - (torch.bmm(p_y.transpose(1, 2), p) / S) @ W  # (R, K, D)


def _mean_softmax_score(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """mean_k of eq. (21)'s logit-space gradient p_y,k (e_y - p_k), y the top class AT z_k: (R, S, C) -> (R, C)."""
    top = p.max(-1)  # values, indices (R, S)
    mean = -(top.values[..., None] * p).mean(1)  # (R, C)
    return mean.scatter_add_(1, top.indices, top.values / p.shape[1])


def _mean_certainty_score(p: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """mean_k of eq. (22)'s logit-space gradient p (log p - E_p[log p]) / log C: (R, S, C) -> (R, C)."""
    return (p * (logp - (p * logp).sum(-1, keepdim=True))).mean(1) / math.log(p.shape[-1])


_CLASS_MEAN_GRADIENT = {  # W (C, D), p (R, S, C), classes y (R, K) -> (R, K, D); a logit's is constant on the path
    Target.LOGIT: lambda W, p, y: W[y],
    Target.PROBABILITY: _mean_probability,
}
_SCORE_MEAN_LOGIT_GRADIENT = {Score.SOFTMAX: _mean_softmax_score, Score.CERTAINTY: _mean_certainty_score}


@dataclass(frozen=True)
class _ThroughLinear:
    """The softmax of logits z (N, C) = x W^T + b, and p W (N, D)."""

    W: torch.Tensor
    p: torch.Tensor
    logp: torch.Tensor
    pW: torch.Tensor

    @classmethod
    def at(cls, W: torch.Tensor, z: torch.Tensor) -> "_ThroughLinear":
        p = z.softmax(-1)
        return cls(W, p, z.log_softmax(-1), p @ W)


@dataclass(frozen=True, eq=False)
class Targets:
    """What one attribution group differentiates, as a function of the logits: per row, the values of its T classes
    (``class_values``) and a last column, a self-referential score (eq. 21 or 22) or zero (``score`` None, e.g. the
    easiness score, which comes from another head).

    Called as ``targets(logits, ids)``: logits (N, C) of rows ``ids`` (N,) (indices into ``idx``) -> (N, T + 1).
    ``second_along`` and ``last_along`` give its exact second derivatives along directions u, which the
    gradient-Hessian of a piecewise-linear head needs (``galore.attribution.gradient_hessian_piecewise_linear``).

    Example:
        >>> t = Targets(Target.PROBABILITY, torch.tensor([[0, 2]]), Score.SOFTMAX)
        >>> t(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])).round(decimals=4)
        tensor([[0.7870, 0.1065, 0.7870]])
    """

    target: Target
    idx: torch.Tensor  # (R, T) class ids of each row
    score: Score | None

    def __call__(self, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        values = class_values(logits, self.target).gather(1, self.idx[ids])  # (N, T)
        s = SELF_REFERENTIAL[self.score](logits) if self.score is not None else torch.zeros_like(values[:, 0])
        return torch.cat([values, s[:, None]], dim=1)

    def through_linear(self, W: torch.Tensor, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The gradient of every column with respect to x, where the logits z (N, C) = x W^T + b, W (C, D): in closed
        form, (N, T + 1, D). A logit column's is a row of W (a gather, not a product with a one-hot cotangent)."""
        at = _ThroughLinear.at(W, z)
        classes = _CLASS_GRADIENT[self.target](at, self.idx[ids])
        s = _SCORE_GRADIENT[self.score](at) if self.score is not None else torch.zeros_like(classes[:, 0])
        return torch.cat([classes, s[:, None]], dim=1)

    def mean_through_linear(self, W: torch.Tensor, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``through_linear`` averaged over S points of each row's path (integrated gradients' mean gradient, eq. 19):
        z (R, S, C) the logits at the points, ids (R,) -> (R, T + 1, D). Closed form: the mean is taken of the
        C-dimensional gradients in the logits, then multiplied by W once (a logit column's is its row of W)."""
        p = z.softmax(-1)  # (R, S, C)
        classes = _CLASS_MEAN_GRADIENT[self.target](W, p, self.idx[ids])
        if self.score is None:
            s = torch.zeros_like(classes[:, 0])
        else:
            s = _SCORE_MEAN_LOGIT_GRADIENT[self.score](p, z.log_softmax(-1)) @ W  # (R, D)
        return torch.cat([classes, s[:, None]], dim=1)

    def second_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """u^T S u per column, S the column's Hessian in the logits at z: z, u (N, C), ids (N,) -> (N, T + 1)."""
        a = _Along.at(z, u)
        classes = _CLASS_ALONG[self.target](a, self.idx[ids])
        s = _SCORE_ALONG[self.score][0](a) if self.score is not None else torch.zeros_like(classes[:, 0])
        return torch.cat([classes, s[:, None]], dim=1)

    def last_along(self, z: torch.Tensor, u: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """S u of the last column (the score): z, u (N, C), ids (N,) -> (N, C)."""
        if self.score is None:
            return torch.zeros_like(z)
        return _SCORE_ALONG[self.score][1](_Along.at(z, u))
