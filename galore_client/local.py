"""In-process explanations (``galore explain --local``): the core engine, no server, same typed results.

Converts ``galore.results.ImageResult`` (torch tensors) to ``galore_client.results.Explanation`` (numpy), so the
CLI and the report treat local and served results alike. Imports torch and the engine only when used.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from .errors import GaloreClientError
from .images import ImageFile
from .settings import ExplainSettings, ModelSummary
from .results import (Attributive, ClassRef, ClassScore, Counterfactual, ExemplarSide, Explanation, ImageFailure,
                      Insecurity, Region, center_crop_box, label_of)


def region_from_engine(region, keep_heatmap: bool = True) -> Region:
    """galore Region (torch mask (H0, W0) bool, heatmap (h, w)) -> client Region (numpy)."""
    heatmap = region.heatmap.detach().cpu().float().numpy() if keep_heatmap and region.heatmap is not None else None
    return Region(mask=region.mask.detach().cpu().numpy().astype(bool), strength=float(region.strength),
                  pixel_count=int(region.pixel_count),
                  bbox=None if region.bbox is None else tuple(int(v) for v in region.bbox), heatmap=heatmap)


def explanation_from_engine(result, labels: Sequence[str], keep_heatmaps: bool = True) -> Explanation:
    """galore ImageResult -> Explanation (``crop_box`` left unset)."""
    if result.error is not None:
        err = result.error
        return Explanation(error=ImageFailure(code=err.code, message=err.message, field=err.field))

    def ref(class_id: int) -> ClassRef:
        return ClassRef(int(class_id), label_of(labels, int(class_id)))

    def attributive(value) -> Attributive | None:
        return None if value is None else Attributive(ref(value.class_id), region_from_engine(value.region,
                                                                                              keep_heatmaps))

    deliberative = {int(v): tuple(Insecurity(tuple(ref(c) for c in ins.class_ids),
                                             region_from_engine(ins.region, keep_heatmaps)) for ins in group)
                    for v, group in sorted(result.deliberative.items())}
    counterfactual = None
    if result.counterfactual is not None:
        cf = result.counterfactual
        counterfactual = Counterfactual(
            predicted=ref(cf.predicted_id), counter=tuple(ref(c) for c in cf.counter_ids),
            query=region_from_engine(cf.query, keep_heatmaps),
            exemplars=tuple(ExemplarSide(ref(side.class_id), side.exemplar_key,
                                         None if side.region is None else region_from_engine(side.region,
                                                                                            keep_heatmaps),
                                         side.missing_reason) for side in cf.exemplars),
            strength=float(cf.strength), complete=bool(cf.complete))
    return Explanation(
        width=int(result.width), height=int(result.height),
        top_classes=tuple(ClassScore(int(c.class_id), c.label, float(c.probability)) for c in result.top_classes),
        score_name=str(getattr(result.score_name, "value", result.score_name)), score=float(result.score),
        attributive=attributive(result.attributive), self_aware=attributive(result.self_aware),
        deliberative=deliberative, counterfactual=counterfactual,
    )


def to_chw(pixels: np.ndarray):
    """(H0, W0, 3) uint8 numpy -> (3, H0, W0) torch.uint8, as ``galore.ImageRequest.image`` wants."""
    import torch

    return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class LocalBackend:
    """Runs ``galore.Engine`` in this process with the client's API: ``model_info``, ``explain``, ``close``.

    ``engine`` defaults to ``Engine.default(device)`` (EfficientNet-Lite0, weights from the installed package).
    Request-level problems raise ``GaloreClientError`` with the engine's code; image-level ones become that
    image's ``Explanation.error``, as from a server.
    """

    def __init__(self, engine=None, device: str | None = None):
        if engine is None:
            from galore import Engine

            engine = Engine.default(device=device)
        self.engine = engine

    def model_info(self) -> ModelSummary:
        info = self.engine.info
        return ModelSummary(name=info.name, labels=tuple(info.labels), architecture=info.name, layer=info.layer,
                            feature_grid=tuple(info.feature_grid), input_size=info.input_size,
                            scores=tuple(s.value for s in info.scores),
                            attributions=tuple(a.value for a in info.attributions),
                            exemplar_class_ids=tuple(info.exemplar_classes),
                            has_hardness_predictor=info.has_hardness)

    def explain(self, images: Sequence[ImageFile], settings: ExplainSettings,
                exemplars: Mapping[int, ImageFile] | None = None) -> list[Explanation]:
        """One Explanation per image, in order; ``exemplars`` maps a counter class (as in
        ``settings.counter_classes``) -> its exemplar image, shared by every image."""
        from galore import ImageRequest
        from galore.errors import GaloreError

        try:
            ids = {c: self.engine.class_id(c, "options.counter_classes") for c in settings.counter_classes}
            options = replace(settings, counter_classes=tuple(ids.values())).to_engine_options()
        except GaloreError as err:
            raise GaloreClientError(err.code, err.message, err.field) from err
        shared = {ids[key]: to_chw(ex.pixels) for key, ex in (exemplars or {}).items()}
        requests = [ImageRequest(image=to_chw(img.pixels), options=options, exemplars=dict(shared))
                    for img in images]
        labels, resize = self.engine.info.labels, self.engine.preprocess.resize
        crop = self.engine.info.input_size
        out = []
        for result in self.engine.explain(requests):
            explanation = explanation_from_engine(result, labels, keep_heatmaps=settings.include_heatmaps)
            if explanation.ok:
                explanation = replace(explanation, crop_box=center_crop_box(explanation.width, explanation.height,
                                                                            crop, resize))
            out.append(explanation)
        return out

    def close(self) -> None:
        pass
