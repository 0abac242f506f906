"""Batch scheduling of attributions: which feature rows need which class maps, and all of them in one pass per group.

A row is one feature map F (a query image or an exemplar) with the classes whose maps it needs. Rows whose options
change the maps in the same way (``group_of``) share ONE head forward and ONE batched vector-Jacobian product over
every (row, target). For the gradient-only methods (gradient x activation, Grad-CAM), a group of query rows only
reuses the head pass that made the prediction (``HeadPass``): the head then runs once per image in all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .attribution import GRADIENT_ONLY, attribute
from .confidence import SELF_REFERENTIAL, Targets, easiness_score
from .device import to_device
from .exemplars import Features
from .gradients import LinearLogitsFn, batched_vjp
from .model import SplitModel
from .options import ExplainOptions, Score
from .pooled_head import per_location, pooled_split

CLIP_FLOOR = 1e-7  # what the authors' code writes over negative class attributions: "clipped to ~0"


def group_of(o: ExplainOptions) -> tuple:
    """Options that change the attribution maps: rows of one group share one batched head pass."""
    return o.attribution, o.target, o.score, o.ig_steps, o.clip_negative, o.normalize


@dataclass(eq=False)
class Row:
    """One feature map's attribution job: the classes whose maps it needs, in first-needed slot order."""

    feats: Features
    slot: dict[int, int] = field(default_factory=dict)

    def need(self, classes: Sequence[int]) -> "Row":
        for c in classes:
            self.slot.setdefault(c, len(self.slot))
        return self


@dataclass(frozen=True)
class RowMaps:
    """A row's post-processed maps: class maps (len(slot), h, w), m(a(s)) and m(a(1 - s)) (h, w)."""

    slot: dict[int, int]
    maps: torch.Tensor
    score: torch.Tensor
    inverse_score: torch.Tensor

    def of(self, classes: Sequence[int]) -> torch.Tensor:
        return self.maps[to_device([self.slot[c] for c in classes], self.maps.device, torch.long)]  # (V, h, w)


class HeadPass:
    """The prediction's head forward, taken with autograd on the query rows F (B, D, h, w): logits (B, C). A head that
    starts with global average pooling (``pooled_split``) takes autograd from the pooled features only."""

    def __init__(self, head: torch.nn.Module, F: torch.Tensor):
        self.pooled, self.locations = pooled_split(head), F.shape[-2:]
        with torch.no_grad():
            start = self.pooled.pool(F) if self.pooled else F  # (B, D, 1, 1) or (B, D) pooled; else F
        self.leaf = start.detach().requires_grad_(True)
        with torch.enable_grad():
            self.logits = (self.pooled.rest if self.pooled else head)(self.leaf)
        self.index: dict[int, int] = {}  # id(Features) -> row of leaf

    def gradients(self, rows: list[Row], values_of) -> torch.Tensor | None:
        """d values / d F (R, T, D, h, w) (pooled: (R, T, D, 1, 1)) for ``rows`` through this pass, or None when some row (an exemplar) is not
        in it: then one fresh head pass over all rows costs less than this one plus a second graph (a head such as
        VGG16's is bound by reading its weights, once per forward and once per backward)."""
        if any(id(r.feats) not in self.index for r in rows):
            return None
        index = to_device([self.index[id(r.feats)] for r in rows], self.leaf.device, torch.long)
        ids = torch.arange(len(rows), device=self.leaf.device)
        if self.pooled and self.pooled.linear is not None and isinstance(values_of, LinearLogitsFn):  # closed form
            grads = values_of.through_linear(self.pooled.linear.weight, self.logits[index].detach(), ids)  # (R, T, D)
            return per_location(grads, *self.locations)
        with torch.enable_grad():
            values = values_of(self.logits[index], ids)
        (grads,) = batched_vjp([values], [self.leaf], retain_graph=True)  # (B, T, D, h, w); pooled: (B, T, D[, 1, 1])
        return (per_location(grads, *self.locations) if self.pooled else grads)[index]


def attribute_rows(split: SplitModel, hardness: SplitModel | None, groups: dict[tuple, dict[int, Row]],
                   head_pass: HeadPass | None) -> dict[int, dict[tuple, RowMaps]]:
    """Maps of every row of every group -> {id(Features): {group: RowMaps}}."""
    out: dict[int, dict[tuple, RowMaps]] = {}
    for key, by_feats in groups.items():
        rows = list(by_feats.values())
        for row, maps in zip(rows, _attribute_group(split, hardness, key, rows, head_pass)):
            out.setdefault(id(row.feats), {})[key] = maps
    return out


def _attribute_group(split, hardness, key: tuple, rows: list[Row], head_pass: HeadPass | None) -> list[RowMaps]:
    method, target, score, steps, clip, norm = key
    T = max(len(r.slot) for r in rows)
    F = torch.stack([r.feats.F for r in rows])  # (R, D, h, w)
    padded = [list(r.slot) + [next(iter(r.slot))] * (T - len(r.slot)) for r in rows]
    idx = to_device(padded, F.device, torch.long)  # (R, T), padded with a repeat (its map is ignored)
    values_of = Targets(target, idx, score if score in SELF_REFERENTIAL else None)  # (N, C), (N,) -> (N, T + 1)

    grads = head_pass.gradients(rows, values_of) if head_pass and method in GRADIENT_ONLY else None
    raw, raw_s = attribute(method, lambda f, ids: values_of(split.head(f), ids), F, steps, split_last=True,
                           grads=grads, parts=(split.head, values_of))  # (R, T + 1, h, w), (R, D, h, w)
    if score is Score.EASINESS:
        Fs = torch.stack([r.feats.Fs for r in rows])
        _, raw_s = attribute(method, lambda f, ids: easiness_score(hardness.head(f))[:, None], Fs, steps,
                             split_last=True)
    maps = class_maps(raw[:, :T].detach(), clip, norm)
    s_maps, inv_maps = score_maps(raw_s.detach() if clip else raw_s.detach().sum(1), clip, norm, F.shape[-2:])
    return [RowMaps(dict(r.slot), maps[i, :len(r.slot)], s_maps[i], inv_maps[i]) for i, r in enumerate(rows)]


def class_maps(raw: torch.Tensor, clip: bool, normalize: bool) -> torch.Tensor:
    """m(a) for class targets, raw (R, T, h, w).

    clip (default, authors' code): negative attributions become CLIP_FLOOR, so a class without evidence at a
    location damps a product instead of zeroing it. normalize: per-map min-max to [0, 1] (§V-A)."""
    out = torch.where(raw < 0, torch.full_like(raw, CLIP_FLOOR), raw) if clip else raw
    return _minmax(out) if normalize else out


def score_maps(raw: torch.Tensor, clip: bool, normalize: bool, size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(a(s), a(1 - s)) maps (R, h, w) from the score's raw attribution (R[, D], h_s, w_s).

    Since 1 - s has the opposite gradient, a(1 - s) = -a(s) per channel (Table I's s <- 1 - s). With ``clip`` each
    keeps only its positive channel contributions, as the authors' hardness attribution clips gradients before
    summing over channels: a(s) = sum_k relu(c_k), a(1 - s) = sum_k relu(-c_k). Without it both are signed sums.
    A hardness predictor whose grid differs from F's is resized bilinearly to F's grid."""
    if clip:
        pos, neg = raw.clamp_min(0).sum(1), (-raw).clamp_min(0).sum(1)
    else:
        pos, neg = raw, -raw
    pos, neg = _resize(pos, size), _resize(neg, size)
    return (_minmax(pos), _minmax(neg)) if normalize else (pos, neg)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)


def _resize(maps: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(R, h_s, w_s) -> (R, h, w) bilinear, for a hardness predictor whose grid differs from F's."""
    if maps.shape[-2:] == size:
        return maps
    return torch.nn.functional.interpolate(maps[:, None], size=tuple(size), mode="bilinear",
                                           align_corners=False)[:, 0]
