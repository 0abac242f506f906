"""Cascading model-parameter randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

The layers of the head, then of the backbone, are re-initialised top down and cumulatively; after each step the
attributive map of y*, the deliberative map of the original strongest insecurity (a, b) and the counterfactual map
of (y*, y^c) are recomputed FOR THE SAME CLASSES, and compared with the original model's maps by Spearman rank
correlation and SSIM (Wang et al. 2004, scikit-image) on the S x S upsampled maps (each min-max scaled to [0, 1]
for SSIM). A map that depends on what the model learned decorrelates as the cascade proceeds.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..engine import ImageRequest
from ..model import SplitModel
from ..options import Kind
from .common import Photo, Progress, Scorer, Setting, kind_map, mean, quiet, seeded, spearman

KINDS = (Kind.ATTRIBUTIVE, Kind.DELIBERATIVE, Kind.COUNTERFACTUAL)


@dataclass(frozen=True)
class SanityPoint:
    photo: str
    setting: str
    kind: str
    step: int  # 0: original model; n: the first n cascade groups randomised
    layer: str  # the last group randomised ("" at step 0)
    spearman: float
    ssim: float


@dataclass
class SanityReport:
    layers: list[str] = field(default_factory=list)  # cascade order, top down
    points: list[SanityPoint] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """Per (setting, kind, step): mean Spearman and SSIM over photos."""
        rows = []
        keys = dict.fromkeys((p.setting, p.kind, p.step, p.layer) for p in self.points)
        for setting, kind, step, layer in keys:
            ps = [p for p in self.points if (p.setting, p.kind, p.step) == (setting, kind, step)]
            rows.append({"setting": setting, "kind": kind, "step": step, "randomised_through": layer,
                         "spearman": mean([p.spearman for p in ps]), "ssim": mean([p.ssim for p in ps])})
        return rows

    def to_dict(self) -> dict:
        return {"metric": "sanity", "cascade": self.layers, "summary": self.summary(),
                "points": [p.__dict__ for p in self.points]}


def cascade_groups(split: SplitModel) -> list[tuple[str, list[str]]]:
    """Layers to randomise, top down: (name, [qualified module names]) of the head then of the backbone. A group
    is a top-level child, or its numbered child for containers of blocks (``_blocks.15``, ``layer4.1``)."""
    out = []
    for part, module in (("head", split.head), ("backbone", split.backbone)):
        groups: dict[str, list[str]] = {}
        for name, m in module.named_modules():
            if name and any(True for _ in m.parameters(recurse=False)):
                parts = name.split(".")
                key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
                groups.setdefault(key, []).append(name)
        out += [(f"{part}:{k}", v) for k, v in reversed(groups.items())]
    return out


def randomise(module: torch.nn.Module, names: Sequence[str], generator: torch.Generator) -> None:
    """Re-initialise the parameters (and batch-norm statistics) of the named submodules in place: weights from
    the layer's own default initialisation scheme where it has one, seeded; else N(0, 0.01)."""
    modules = dict(module.named_modules())
    for name in names:
        m = modules[name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device="cpu")))
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # identity affine: draw it instead
                    torch.nn.init.normal_(m.weight, 1.0, 0.5)
                    torch.nn.init.normal_(m.bias, 0.0, 0.5)
            else:
                for p in m.parameters(recurse=False):
                    torch.nn.init.normal_(p, 0.0, 0.01)


def map_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman between two maps; a constant map (e.g. every attribution clipped) ranks nothing: 0."""
    if float(np.ptp(a)) == 0.0 or float(np.ptp(b)) == 0.0:
        return 0.0
    return spearman(a, b)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps after min-max scaling each to [0, 1] (a constant map becomes 0)."""
    from skimage.metrics import structural_similarity

    def unit(m):
        lo, hi = float(m.min()), float(m.max())
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)

    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)  # skimage's default 7, odd, within the map
    return float(structural_similarity(unit(a), unit(b), data_range=1.0, win_size=max(window, 1)))


def evaluate_sanity(engine, photos: Sequence[Photo], settings: Sequence[Setting], max_steps: int | None = None,
                    progress: Progress = quiet) -> SanityReport:
    """The cascade of ``cascade_groups`` (its first ``max_steps`` groups, all by default) for every photo and
    setting; the classes of each map are fixed by the original model: y*, its runner-up y^c, and the strongest
    insecurity (V = 2) the engine returns under the setting."""
    original = Scorer.of(engine)
    groups = cascade_groups(engine.split)[:max_steps]
    report = SanityReport([g for g, _ in groups])
    classes: dict[tuple[str, str], dict[Kind, tuple[int, ...]]] = {}
    originals: dict[tuple[str, str, Kind], np.ndarray] = {}
    inputs = {p.name: original.input(p.image) for p in photos}
    for photo in photos:
        for s in settings:
            options = s.with_kinds(Kind.DELIBERATIVE, dims=(2,), max_insecurities=1,
                                   top_e=min(s.options.top_e, len(engine.labels)))
            (res,) = engine.explain([ImageRequest(photo.image, options)])
            if res.error is not None:
                raise res.error
            y, c = res.top_classes[0].class_id, res.top_classes[1].class_id
            pair = res.deliberative[2][0].class_ids if res.deliberative.get(2) else (y, c)
            classes[photo.name, s.name] = {Kind.ATTRIBUTIVE: (y,), Kind.DELIBERATIVE: pair,
                                           Kind.COUNTERFACTUAL: (y, c)}
    split = copy.deepcopy(engine.split)
    for step in range(len(groups) + 1):
        if step:
            name, modules = groups[step - 1]
            part = split.head if name.startswith("head:") else split.backbone
            randomise(part, modules, seeded("sanity", name))
        scorer = Scorer(split, engine.preprocess, engine.hardness)
        for photo in photos:
            progress(f"sanity step {step}/{len(groups)} {photo.name}")
            x = inputs[photo.name]
            for s in settings:
                wanted = classes[photo.name, s.name]
                need = list(dict.fromkeys(c for cs in wanted.values() for c in cs))
                maps = scorer.maps(x, need, s.options)
                for kind in KINDS:
                    heat = scorer.upsample(kind_map(maps, kind, wanted[kind])[None])[0].numpy()
                    key = (photo.name, s.name, kind)
                    if step == 0:
                        originals[key] = heat
                    report.points.append(SanityPoint(photo.name, s.name, kind.value, step,
                                                     groups[step - 1][0] if step else "",
                                                     map_spearman(originals[key], heat), ssim(originals[key], heat)))
    return report
