"""Confidence scores s(x) (§V-B) and class targets h_y, as differentiable functions of the head's output.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> round(float(softmax_score(logits)), 4), round(float(certainty_score(logits)), 4)
    (0.787, 0.3942)
"""
from __future__ import annotations

import math

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
