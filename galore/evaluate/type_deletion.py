"""Deletion tests for each explanation type: does removing the region an explanation returns change the model the
way the explanation claims, more than removing a random region of the same size or an attributive region?

Per region, with the region's pixels replaced by the baseline (x -> x'):
- attributive (eq. 3), class y*: the drop of h_y*(x), the explained class's probability;
- deliberative insecurity (eqs. 5, 12) of classes (a, b[, c]), reported per V: eq. (5) claims the region holds
  evidence for EVERY class of the tuple, so the effect is the drop of min_c h_c(x), the evidence the classes
  share (h: softmax probability). References: random regions and each class's OWN attributive region (eq. 3 for
  that class) of the same size ("own attributive, best": the strongest of them; beating it means beating every
  class's own region). Insertion variant (only the region kept, the rest the baseline): sum_c h_c(x_kept) should
  stay high, against the same references kept instead. Also reported, as before: the drop of the tuple's
  ambiguity V min_c h_c / sum_c h_c (1: a tie; it can stay put when both classes lose evidence, so it is a
  column, not the test) and the drop of 1 - s(x);
- counterfactual (eq. 11), y* against y^c: the drop of the margin logit(y*) - logit(y^c).
Each effect is compared with the same effect for (i) random regions of the same pixel count (blobs from noise on
the feature grid, averaged over draws), (ii) the attributive region of y* cut to the same count (deliberative:
each class's own) and, for the counterfactual, (iii) pytorch-grad-cam's FinerCAM (Zhang et al., CVPR 2025) for y*
against y^c, same count. The Spearman correlation between each region's strength (eqs. 15-16) and its effect,
over all regions of all photos, stands in for the paper's Table II (strength vs precision) where no part
annotations exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..engine import ImageRequest
from ..options import Kind
from ..confidence import SELF_REFERENTIAL
from .common import (Baseline, Photo, Progress, Scorer, Setting, baseline, kind_map, mean, quiet, random_maps,
                     replaced, seeded, spearman, top_mask)

RANDOM_DRAWS = 8
ATTRIBUTIVE_REFERENCE, RANDOM_REFERENCE, FINER_CAM_REFERENCE = "attributive region", "random regions", "FinerCAM"
OWN_BEST, OWN_MEAN = "own attributive, best", "own attributive, mean"  # deliberative: each class's own region
DELIBERATIVE, INSERTION = "deliberative", "deliberative insertion"


@dataclass(frozen=True)
class RegionEffect:
    """One explanation region and what removing it (and its references of the same size) does."""

    photo: str
    setting: str
    kind: str  # "attributive", "deliberative", "deliberative insertion" (higher: better), "counterfactual"
    classes: tuple[int, ...]
    strength: float
    pixels: int
    effect: float  # drop of the kind's quantity (positive: the explanation's claim holds)
    references: dict[str, float]  # reference name -> the same drop for a reference region of the same size
    uncertainty_drop: float = float("nan")  # deliberative: drop of 1 - s(x)
    ambiguity_drop: float = float("nan")  # deliberative: drop of V min_c h_c / sum_c h_c (the former test)
    ambiguity_random: float = float("nan")  # the same for the random regions (mean)

    @property
    def dim(self) -> int:
        """V for an insecurity, 1 otherwise."""
        return len(self.classes) if self.kind.startswith(DELIBERATIVE) else 1

    @property
    def group(self) -> str:
        """The summary row: the kind, with V for insecurities ("deliberative V=2")."""
        return f"{self.kind} V={self.dim}" if self.kind.startswith(DELIBERATIVE) else self.kind


@dataclass
class TypesReport:
    baseline: Baseline
    effects: list[RegionEffect] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """Per (setting, kind, V): mean effect, mean of each reference, the fraction of regions beating each
        reference, and Spearman(strength, effect); deliberative rows add the former ambiguity measure."""
        rows = []
        for setting in dict.fromkeys(e.setting for e in self.effects):
            for group in dict.fromkeys(e.group for e in self.effects):
                es = [e for e in self.effects if e.setting == setting and e.group == group]
                if not es:
                    continue
                row = {"setting": setting, "kind": group, "regions": len(es), "effect": mean([e.effect for e in es])}
                for ref in dict.fromkeys(r for e in es for r in e.references):
                    vals = [(e.effect, e.references[ref]) for e in es if ref in e.references]
                    row[ref] = mean([v for _, v in vals])
                    row[f"wins vs {ref}"] = float(np.mean([a > b for a, b in vals]))
                row["spearman(strength, effect)"] = spearman([e.strength for e in es], [e.effect for e in es])
                if es[0].kind == DELIBERATIVE:
                    row["ambiguity drop"] = mean([e.ambiguity_drop for e in es])
                    row["ambiguity drop, random"] = mean([e.ambiguity_random for e in es])
                    row["ambiguity wins vs random"] = float(np.mean([e.ambiguity_drop > e.ambiguity_random
                                                                     for e in es]))
                    row["1 - s(x) drop"] = mean([e.uncertainty_drop for e in es])
                rows.append(row)
        return rows

    def to_dict(self) -> dict:
        return {"metric": "types", "baseline": self.baseline.value, "random_draws": RANDOM_DRAWS,
                "summary": self.summary(),
                "regions": [{"photo": e.photo, "setting": e.setting, "kind": e.kind, "classes": list(e.classes),
                             "strength": e.strength, "pixels": e.pixels, "effect": e.effect,
                             "references": e.references, "uncertainty_drop": e.uncertainty_drop,
                             "ambiguity_drop": e.ambiguity_drop, "ambiguity_random": e.ambiguity_random}
                            for e in self.effects]}


def ambiguity(probs: torch.Tensor, *classes: int) -> torch.Tensor:
    """V min_c p_c / sum_c p_c over the V ``classes``, per row of probs (N, C): 1 when they tie, 0 when one has it
    all (V = 2: 2 min(p_a, p_b) / (p_a + p_b))."""
    p = probs[:, list(classes)]  # (N, V)
    return len(classes) * p.amin(1) / p.sum(1).clamp_min(1e-30)


def shared_evidence(probs: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """min_c p_c over the tuple's classes, per row of probs (N, C): what eq. (5) says an insecurity holds,
    evidence for every class of the tuple at once."""
    return probs[:, list(classes)].amin(1)


def margin(logits: torch.Tensor, y: int, c: int) -> torch.Tensor:
    return logits[:, y] - logits[:, c]


def finer_cam_map(scorer: Scorer, x: torch.Tensor, y: int, counters: Sequence[int]) -> torch.Tensor:
    """pytorch-grad-cam's FinerCAM for y against the ``counters`` (alpha 1; several: weighted by their softmax
    probabilities, as ``FinerWeightedTarget`` does), at layer F, (S, S)."""
    from pytorch_grad_cam import FinerCAM
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget
    model = torch.nn.Sequential(scorer.split.backbone, scorer.split.head).eval()
    with FinerCAM(model, target_layers=[model[0]]) as cam:
        return torch.from_numpy(cam(x[None], targets=[FinerWeightedTarget(y, list(counters), 1.0)])[0]).float()


def evaluate_types(engine, photos: Sequence[Photo], settings: Sequence[Setting], base: Baseline = Baseline.BLUR,
                   insecurities: int = 3, random_draws: int = RANDOM_DRAWS, finer_cam: bool = True,
                   progress: Progress = quiet, dims: Sequence[int] = (2, 3)) -> TypesReport:
    """Removes every attributive, deliberative (each V of ``dims`` up to E, the ``insecurities`` strongest) and
    counterfactual region the engine returns for each photo and setting, and each reference region of the same
    size; keeps only each insecurity region (insertion); see the module doc."""
    scorer = Scorer.of(engine)
    report = TypesReport(base)
    grid = scorer.split.feature_shape[1:]
    for photo in photos:
        x = scorer.input(photo.image)
        b = baseline(x, base)
        for s in settings:
            progress(f"types {photo.name} {s.name}")
            top_e = min(s.options.top_e, len(engine.labels))
            vs = tuple(v for v in dims if 2 <= v <= top_e)
            options = s.with_kinds(Kind.ATTRIBUTIVE, Kind.DELIBERATIVE, Kind.COUNTERFACTUAL, dims=vs or (2,),
                                   max_insecurities=insecurities, top_e=top_e)
            (res,) = engine.explain([ImageRequest(photo.image, options)])
            if res.error is not None:
                raise res.error
            y = res.attributive.class_id
            attributive_heat = scorer.upsample(res.attributive.region.heatmap[None])[0]
            regions = [("attributive", (y,), res.attributive.region)]
            for v in vs:
                regions += [(DELIBERATIVE, ins.class_ids, ins.region) for ins in res.deliberative.get(v, [])]
            cf = res.counterfactual
            regions.append(("counterfactual", (cf.predicted_id,) + cf.counter_ids, cf.query))
            own = _own_attributive(scorer, x, s, [c for kind, cs, _ in regions if kind == DELIBERATIVE for c in cs])
            masks, plan = [], []  # every mask to replace for this photo and setting, then one batched forward

            def add(ms: list[torch.Tensor]) -> tuple[int, int]:
                masks.extend(ms)
                return len(masks) - len(ms), len(masks)

            for kind, classes, region in regions:
                mask = scorer.pixels(region.cells)
                k = int(mask.sum())
                gen = seeded(photo.name, s.name, kind, classes)
                refs = {RANDOM_REFERENCE: [top_mask(m, k, gen) for m in
                                           scorer.upsample(random_maps(random_draws, grid, gen))]}
                if kind == DELIBERATIVE:
                    refs["own"] = [top_mask(own[c], k, gen) for c in classes]  # each class's own region
                elif kind != "attributive":
                    refs[ATTRIBUTIVE_REFERENCE] = [top_mask(attributive_heat, k, gen)]
                if kind == "counterfactual" and finer_cam:
                    refs[FINER_CAM_REFERENCE] = [top_mask(finer_cam_map(scorer, x, classes[0], classes[1:2]), k, gen)]
                spans = {"explanation": add([mask])} | {name: add(ms) for name, ms in refs.items()}
                if kind == DELIBERATIVE:  # insertion: only the region (or the reference) kept, the rest replaced
                    spans["keep explanation"] = add([~mask])
                    spans |= {f"keep {name}": add([~m for m in ms]) for name, ms in refs.items()}
                plan.append((kind, classes, region, k, spans))
            logits = scorer.logits(torch.cat([x[None], replaced(x, b, torch.stack(masks))]))
            before, after = logits[:1], logits[1:]
            for kind, classes, region, k, spans in plan:
                report.effects += _effects(photo.name, s, kind, classes, float(region.strength), k, spans, before,
                                           after)
    return report


def _own_attributive(scorer: Scorer, x: torch.Tensor, setting: Setting, classes: list[int]
                     ) -> dict[int, torch.Tensor]:
    """Class -> its attributive map (eq. 3) upsampled to the crop (S, S), for the classes of the insecurities."""
    classes = list(dict.fromkeys(classes))
    if not classes:
        return {}
    maps = scorer.maps(x, classes, setting.options)
    heats = scorer.upsample(torch.stack([kind_map(maps, Kind.ATTRIBUTIVE, (c,)) for c in classes]))
    return dict(zip(classes, heats))


def _effects(photo: str, s: Setting, kind: str, classes: tuple[int, ...], strength: float, k: int,
             spans: dict[str, tuple[int, int]], before: torch.Tensor, after: torch.Tensor) -> list[RegionEffect]:
    """The RegionEffects of one region from the logits ``before`` (1, C) and ``after`` (N, C) every replacement."""
    start = spans["explanation"][0]
    if kind != DELIBERATIVE:
        drop = _drop(kind, classes, before, after)
        refs = {name: float(drop[i:j].mean()) for name, (i, j) in spans.items() if name != "explanation"}
        return [RegionEffect(photo, s.name, kind, tuple(classes), strength, k, float(drop[start]), refs)]
    p0, p1 = before.softmax(-1), after.softmax(-1)
    drop = shared_evidence(p0, classes) - shared_evidence(p1, classes)  # (N,)
    kept = p1[:, list(classes)].sum(1)  # (N,) insertion: sum_c h_c with only the region kept

    def refs_of(values: torch.Tensor, prefix: str) -> dict[str, float]:
        (ri, rj), (oi, oj) = spans[prefix + RANDOM_REFERENCE], spans[prefix + "own"]
        return {RANDOM_REFERENCE: float(values[ri:rj].mean()), OWN_BEST: float(values[oi:oj].max()),
                OWN_MEAN: float(values[oi:oj].mean())}

    amb = ambiguity(p0, *classes) - ambiguity(p1, *classes)
    ri, rj = spans[RANDOM_REFERENCE]
    uncertainty = float("nan")
    if s.options.score in SELF_REFERENTIAL:
        u = 1 - SELF_REFERENTIAL[s.options.score](torch.cat([before, after[start:start + 1]]))
        uncertainty = float(u[0] - u[1])
    keep = spans["keep explanation"][0]
    return [RegionEffect(photo, s.name, DELIBERATIVE, tuple(classes), strength, k, float(drop[start]),
                         refs_of(drop, ""), uncertainty, float(amb[start]), float(amb[ri:rj].mean())),
            RegionEffect(photo, s.name, INSERTION, tuple(classes), strength, k, float(kept[keep]),
                         refs_of(kept, "keep "))]


def _drop(kind: str, classes: tuple[int, ...], before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(N,) drop of the kind's quantity from ``before`` (1, C) logits to each row of ``after`` (N, C): attributive,
    h_y*; counterfactual, the margin logit(y*) - logit(y^c)."""
    if kind == "attributive":
        return before.softmax(-1)[:, classes[0]] - after.softmax(-1)[:, classes[0]]
    return margin(before, classes[0], classes[1]) - margin(after, classes[0], classes[1])
