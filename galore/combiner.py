"""Eq. (2) with Table I: every GALORE heatmap is m^alpha(a_pred) * prod_{c in C} m^beta(a_c) * m^gamma(a_s).

The explanation types differ only in the three functions and the class set, so they are rows of ``TABLE_I``
and one ``combine`` implements them all.

Example (deliberative, eq. 5, on 1 x 2 maps):
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0]]); b = torch.tensor([[3.0, 0.5]]); hard = torch.tensor([[0.5, 1.0]])
    >>> combine(TABLE_I[Kind.DELIBERATIVE], pred=a, classes=torch.stack([a, b]), score=None, inverse_score=hard)
    tensor([[1.5000, 1.0000]])
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .options import Kind
from .rows import CLIP_FLOOR


class Beta(enum.Enum):
    ONE = "1"  # classes ignored
    IDENTITY = "a"  # eq. (5), (12)
    COMPLEMENT = "max a - a"  # eq. (10), per map; 1 for a class without evidence (see ``complement``)


class Gamma(enum.Enum):
    ONE = "1"
    SCORE = "a(s)"  # eq. (4), (11)
    INVERSE_SCORE = "a(1 - s)"  # Table I: s <- 1 - s for deliberation


@dataclass(frozen=True)
class Recipe:
    """One row of Table I: m^alpha is a (True) or 1 (False); m^beta and m^gamma as named."""

    alpha: bool
    beta: Beta
    gamma: Gamma


TABLE_I: dict[Kind, Recipe] = {
    Kind.ATTRIBUTIVE: Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.ONE),  # eq. (3)
    Kind.SELF_AWARE: Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.SCORE),  # eq. (4)
    Kind.DELIBERATIVE: Recipe(alpha=False, beta=Beta.IDENTITY, gamma=Gamma.INVERSE_SCORE),  # eqs. (5), (12)
    Kind.COUNTERFACTUAL: Recipe(alpha=True, beta=Beta.COMPLEMENT, gamma=Gamma.SCORE),  # eqs. (11), (14)
}


def complement(a: torch.Tensor) -> torch.Tensor:
    """m^beta of eq. (10) for the counter classes' maps a (..., V, h, w) of a discriminant map (eqs. 11, 14): each
    map against its own max, max_ij a_ij(h_c) - a_ij(h_c), as in the paper and the authors' code
    (``np.amax(counter) - counter``). With min-max normalisation (§V-A) every max is 1 and this is 1 - a(h_c).

    A counter class without positive evidence (max_ij a_ij(h_c) <= ``CLIP_FLOOR``: with clipping, a map of ~1e-7
    everywhere) would get a complement of 0 everywhere, and D of eq. (11) would vanish exactly when "why not c?"
    has its clearest answer. Such a class gets m^beta = 1 instead: it removes nothing, so D(x, y*, c) =
    a(h_y*) a(s), y*'s self-aware map (eq. 4). Decided by figures against a scale M shared by y* and C
    (EVALUATION.md, section 2)."""
    peak = a.amax(dim=(-2, -1), keepdim=True)  # (..., V, 1, 1)
    return torch.where(peak > CLIP_FLOOR, peak - a, torch.ones_like(a))


def combine(recipe: Recipe, pred: torch.Tensor | None, classes: torch.Tensor | None, score: torch.Tensor | None,
            inverse_score: torch.Tensor | None) -> torch.Tensor:
    """Eq. (2). pred (..., h, w) = a(h_y*); classes (..., V, h, w) = a(h_c) for c in C; score / inverse_score
    (h, w) = a(s) / a(1 - s). Leading dimensions batch several class sets (e.g. every V-tuple of an ambiguity set
    at once). Inputs are already clipped or normalised maps; the product is never renormalised."""
    out = pred.clone() if recipe.alpha else None
    if recipe.beta is not Beta.ONE:
        factors = classes if recipe.beta is Beta.IDENTITY else complement(classes)
        prod = factors.prod(dim=-3)  # (..., h, w)
        out = prod if out is None else out * prod
    if recipe.gamma is not Gamma.ONE:
        factor = score if recipe.gamma is Gamma.SCORE else inverse_score
        out = factor.clone() if out is None else out * factor
    return out
