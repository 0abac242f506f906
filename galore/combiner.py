"""Eq. (2) with Table I: every GALORE heatmap is m^alpha(a_pred) * prod_{c in C} m^beta(a_c) * m^gamma(a_s).

The explanation types differ only in the three functions and the class set: each is a ``Recipe`` (its row of
Table I, held by its unit in ``galore.kinds``) and one ``combine`` implements them all.

Example (deliberative, eq. 5, on 1 x 2 maps):
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0]]); b = torch.tensor([[3.0, 0.5]]); hard = torch.tensor([[0.5, 1.0]])
    >>> deliberative = Recipe(alpha=False, beta=Beta.IDENTITY, gamma=Gamma.INVERSE_SCORE)
    >>> combine(deliberative, pred=a, classes=torch.stack([a, b]), score=None, inverse_score=hard)
    tensor([[1.5000, 1.0000]])
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .rows import CLIP_FLOOR


class Beta(enum.Enum):
    ONE = "1"  # classes ignored
    IDENTITY = "a"  # eq. (5), (12)
    COMPLEMENT = "M - a"  # eq. (10); M per map or shared with y* (``Complement``, ``complement``)


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




class Complement(enum.Enum):
    """The scale of m^beta (eq. 10) in a discriminant map (eqs. 11, 14); see ``complement``."""

    PER_MAP = "per_map"  # eq. (10) as written: each counter class against its own max; 1 without evidence
    SHARED = "shared"  # one M per discriminant map: the largest value of the maps of y* and of every class of C


# The engine's rule, decided by figures (EVALUATION.md, section 2a). ``galore evaluate --complement`` sets it for the
# evaluation process only, so both rules are measured from the same code; serving never changes it.
COMPLEMENT = Complement.SHARED


def complement(a: torch.Tensor, pred: torch.Tensor, rule: Complement | None = None) -> torch.Tensor:
    """m^beta of eq. (10) for the counter classes' maps a (..., V, h, w) of a discriminant map whose m^alpha map is
    ``pred`` (..., h, w) (eqs. 11, 14), by ``rule`` (default ``COMPLEMENT``):

    PER_MAP: each map against its own max, max_ij a_ij(h_c) - a_ij(h_c), as in the paper and the authors' code
    (``np.amax(counter) - counter``); with min-max normalisation (§V-A) every max is 1 and this is 1 - a(h_c). A
    counter class without positive evidence (max_ij a_ij(h_c) <= ``CLIP_FLOOR``: with clipping, a map of ~1e-7
    everywhere) would get 0 everywhere, and D of eq. (11) would vanish exactly when "why not c?" has its clearest
    answer; it gets m^beta = 1 instead, so D(x, y*, c) = a(h_y*) a(s), y*'s self-aware map (eq. 4).

    SHARED: M - a_ij with M = max(max_ij a_ij(h_y*), max_c max_ij a_ij(h_c)). Equal to PER_MAP when a counter
    class peaks at least as high as y*; otherwise D = D_eq10 + (M - max a(h_c)) a(h_y*) a(s), i.e. it adds a
    multiple of y*'s self-aware map (eq. 4)."""
    rule = COMPLEMENT if rule is None else rule
    if rule is Complement.SHARED:
        scale = torch.maximum(a.amax(dim=(-3, -2, -1)), pred.amax(dim=(-2, -1)))[..., None, None, None]
        return scale - a
    peak = a.amax(dim=(-2, -1), keepdim=True)  # (..., V, 1, 1)
    return torch.where(peak > CLIP_FLOOR, peak - a, torch.ones_like(a))


def combine(recipe: Recipe, pred: torch.Tensor | None, classes: torch.Tensor | None, score: torch.Tensor | None,
            inverse_score: torch.Tensor | None) -> torch.Tensor:
    """Eq. (2). pred (..., h, w) = a(h_y*); classes (..., V, h, w) = a(h_c) for c in C; score / inverse_score
    (h, w) = a(s) / a(1 - s). Leading dimensions batch several class sets (e.g. every V-tuple of an ambiguity set
    at once). Inputs are already clipped or normalised maps; the product is never renormalised."""
    out = pred.clone() if recipe.alpha else None
    if recipe.beta is not Beta.ONE:
        factors = classes if recipe.beta is Beta.IDENTITY else complement(classes, pred)
        prod = factors.prod(dim=-3)  # (..., h, w)
        out = prod if out is None else out * prod
    if recipe.gamma is not Gamma.ONE:
        factor = score if recipe.gamma is Gamma.SCORE else inverse_score
        out = factor.clone() if out is None else out * factor
    return out
