"""Deletion tests for each explanation type: does removing the region an explanation returns change the model the
way the explanation claims, more than removing a random region of the same size or the attributive region?

Per region, with the region's pixels replaced by the baseline (x -> x'):
- attributive (eq. 3), class y*: the drop of h_y*(x), the explained class's probability;
- deliberative insecurity (eq. 5) of classes (a, b): the drop of the pair's ambiguity 2 min(p_a, p_b) / (p_a + p_b)
  (1: a tie, 0: one of them wins), i.e. their probability gap widens; also reported: the drop of 1 - s(x);
- counterfactual (eq. 11), y* against y^c: the drop of the margin logit(y*) - logit(y^c).
Each effect is compared with the same effect for (i) random regions of the same pixel count (blobs from noise on
the feature grid, averaged over draws), (ii) the attributive region of y* cut to the same count and, for the
counterfactual, (iii) pytorch-grad-cam's FinerCAM (Zhang et al., CVPR 2025) for y* against y^c, same count. The
Spearman correlation between each region's strength (eqs. 15-16) and its effect, over all regions of all photos,
stands in for the paper's Table II (strength vs precision) where no part annotations exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..engine import ImageRequest
from ..options import Kind, Score
from ..confidence import SELF_REFERENTIAL
from .common import (Baseline, Photo, Progress, Scorer, Setting, baseline, mean, quiet, random_maps, replaced,
                     seeded, spearman, top_mask)

RANDOM_DRAWS = 8
ATTRIBUTIVE_REFERENCE, RANDOM_REFERENCE, FINER_CAM_REFERENCE = "attributive region", "random regions", "FinerCAM"


@dataclass(frozen=True)
class RegionEffect:
    """One explanation region and what removing it (and its references of the same size) does."""

    photo: str
    setting: str
    kind: str  # "attributive", "deliberative", "counterfactual"
    classes: tuple[int, ...]
    strength: float
    pixels: int
    effect: float  # drop of the kind's quantity (positive: the explanation's claim holds)
    references: dict[str, float]  # reference name -> the same drop for a reference region of the same size
    uncertainty_drop: float = float("nan")  # deliberative: drop of 1 - s(x)


@dataclass
class TypesReport:
    baseline: Baseline
    effects: list[RegionEffect] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """Per (setting, kind): mean effect, mean of each reference, the fraction of regions beating each
        reference, and Spearman(strength, effect)."""
        rows = []
        for setting in dict.fromkeys(e.setting for e in self.effects):
            for kind in dict.fromkeys(e.kind for e in self.effects):
                es = [e for e in self.effects if e.setting == setting and e.kind == kind]
                if not es:
                    continue
                row = {"setting": setting, "kind": kind, "regions": len(es), "effect": mean([e.effect for e in es])}
                for ref in dict.fromkeys(r for e in es for r in e.references):
                    vals = [(e.effect, e.references[ref]) for e in es if ref in e.references]
                    row[ref] = mean([v for _, v in vals])
                    row[f"wins vs {ref}"] = float(np.mean([a > b for a, b in vals]))
                row["spearman(strength, effect)"] = spearman([e.strength for e in es], [e.effect for e in es])
                if kind == "deliberative":
                    row["1 - s(x) drop"] = mean([e.uncertainty_drop for e in es])
                rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {"metric": "types", "baseline": self.baseline.value, "random_draws": RANDOM_DRAWS,
                "summary": self.summary(),
                "regions": [{"photo": e.photo, "setting": e.setting, "kind": e.kind, "classes": list(e.classes),
                             "strength": e.strength, "pixels": e.pixels, "effect": e.effect,
                             "references": e.references, "uncertainty_drop": e.uncertainty_drop}
                            for e in self.effects]}


def ambiguity(probs: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """2 min(p_a, p_b) / (p_a + p_b) per row of probs (N, C): 1 when a and b tie, 0 when one has it all."""
    pa, pb = probs[:, a], probs[:, b]
    return 2 * torch.minimum(pa, pb) / (pa + pb).clamp_min(1e-30)


def margin(logits: torch.Tensor, y: int, c: int) -> torch.Tensor:
    return logits[:, y] - logits[:, c]


def finer_cam_map(scorer: Scorer, x: torch.Tensor, y: int, counter: int) -> torch.Tensor:
    """pytorch-grad-cam's FinerCAM for y against ``counter`` (alpha 1), at layer F, (S, S)."""
    from pytorch_grad_cam import FinerCAM
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget
    model = torch.nn.Sequential(scorer.split.backbone, scorer.split.head).eval()
    with FinerCAM(model, target_layers=[model[0]]) as cam:
        return torch.from_numpy(cam(x[None], targets=[FinerWeightedTarget(y, [counter], 1.0)])[0]).float()


def evaluate_types(engine, photos: Sequence[Photo], settings: Sequence[Setting], base: Baseline = Baseline.BLUR,
                   insecurities: int = 3, random_draws: int = RANDOM_DRAWS, finer_cam: bool = True,
                   progress: Progress = quiet) -> TypesReport:
    """Removes every attributive, deliberative (V = 2, the ``insecurities`` strongest) and counterfactual region the
    engine returns for each photo and setting, and each reference region of the same size; see the module doc."""
    scorer = Scorer.of(engine)
    report = TypesReport(base)
    grid = scorer.split.feature_shape[1:]
    for photo in photos:
        x = scorer.input(photo.image)
        b = baseline(x, base)
        for s in settings:
            progress(f"types {photo.name} {s.name}")
            options = s.with_kinds(Kind.ATTRIBUTIVE, Kind.DELIBERATIVE, Kind.COUNTERFACTUAL, dims=(2,),
                                   max_insecurities=insecurities,
                                   top_e=min(s.options.top_e, len(engine.labels)))
            (res,) = engine.explain([ImageRequest(photo.image, options)])
            if res.error is not None:
                raise res.error
            y = res.attributive.class_id
            attributive_heat = scorer.upsample(res.attributive.region.heatmap[None])[0]
            regions = [("attributive", (y,), res.attributive.region)]
            regions += [("deliberative", ins.class_ids, ins.region) for ins in res.deliberative.get(2, [])]
            cf = res.counterfactual
            regions.append(("counterfactual", (cf.predicted_id,) + cf.counter_ids, cf.query))
            masks, plan = [], []  # every mask to remove for this photo and setting, then one batched forward
            for kind, classes, region in regions:
                mask = scorer.pixels(region.cells)
                k = int(mask.sum())
                gen = seeded(photo.name, s.name, kind, classes)
                refs = {RANDOM_REFERENCE: [top_mask(m, k, gen) for m in
                                           scorer.upsample(random_maps(random_draws, grid, gen))]}
                if kind != "attributive":
                    refs[ATTRIBUTIVE_REFERENCE] = [top_mask(attributive_heat, k, gen)]
                if kind == "counterfactual" and finer_cam:
                    refs[FINER_CAM_REFERENCE] = [top_mask(finer_cam_map(scorer, x, classes[0], classes[1]), k, gen)]
                start = len(masks)
                masks.append(mask)
                spans = {}
                for name, ms in refs.items():
                    spans[name] = (len(masks), len(masks) + len(ms))
                    masks += ms
                plan.append((kind, classes, region, k, start, spans))
            logits = scorer.logits(torch.cat([x[None], replaced(x, b, torch.stack(masks))]))
            before, after = logits[:1], logits[1:]
            for kind, classes, region, k, start, spans in plan:
                drop = _drop(kind, classes, before, after, s.options.score)
                refs = {name: float(drop[i:j].mean()) for name, (i, j) in spans.items()}
                uncertainty = float("nan")
                if kind == "deliberative" and s.options.score in SELF_REFERENTIAL:
                    u = 1 - SELF_REFERENTIAL[s.options.score](torch.cat([before, after[start:start + 1]]))
                    uncertainty = float(u[0] - u[1])
                report.effects.append(RegionEffect(photo.name, s.name, kind, tuple(classes), float(region.strength),
                                                   k, float(drop[start]), refs, uncertainty))
    return report


def _drop(kind: str, classes: tuple[int, ...], before: torch.Tensor, after: torch.Tensor, score: Score
          ) -> torch.Tensor:
    """(N,) drop of the kind's quantity from ``before`` (1, C) logits to each row of ``after`` (N, C)."""
    if kind == "attributive":
        return before.softmax(-1)[:, classes[0]] - after.softmax(-1)[:, classes[0]]
    if kind == "deliberative":
        a, b = classes[0], classes[1]
        return ambiguity(before.softmax(-1), a, b) - ambiguity(after.softmax(-1), a, b)
    return margin(before, classes[0], classes[1]) - margin(after, classes[0], classes[1])
