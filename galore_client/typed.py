"""galore.v1 protobuf <-> the client's typed objects (``ExplainSettings``, ``Explanation``, ``ModelSummary``).

Masks are unpacked from the service's bit packing to ``(H0, W0)`` bool arrays and checked against the image size;
heatmaps become ``(h, w)`` float32 arrays; every class id travels with its label.

Example:
    >>> options = settings_to_proto(ExplainSettings(kinds=("deliberative",), dims=(2, 3), top_e=5))
    >>> list(options.dims), options.top_e
    ([2, 3], 5)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from galore import masks
from galore_api.v1 import explainer_pb2 as pb

from .results import (Attributive, ClassRef, ClassScore, Counterfactual, ExemplarSide, Explanation, ImageFailure,
                      Insecurity, Region, center_crop_box, mask_bbox)
from .settings import ExplainSettings, ModelSummary

_ENUM_PREFIX = {"kinds": "EXPLANATION_KIND_", "attribution": "ATTRIBUTION_FUNCTION_",
                "score": "CONFIDENCE_SCORE_", "target": "ATTRIBUTION_TARGET_"}
_ENUMS = {"kinds": pb.ExplanationKind, "attribution": pb.AttributionFunction, "score": pb.ConfidenceScore,
          "target": pb.AttributionTarget}


class WireFormatError(ValueError):
    """The service's answer does not match its own contract (e.g. a mask of the wrong size)."""


def enum_number(field: str, name: str) -> int:
    """'deliberative' for field 'kinds' -> EXPLANATION_KIND_DELIBERATIVE's number."""
    return _ENUMS[field].Value(_ENUM_PREFIX[field] + name.upper())


def enum_name(field: str, number: int) -> str:
    """Inverse of ``enum_number``: the lower-case name, '' for UNSPECIFIED or unknown numbers."""
    try:
        name = _ENUMS[field].Name(number).removeprefix(_ENUM_PREFIX[field]).lower()
    except ValueError:
        return ""
    return "" if name == "unspecified" else name


def settings_to_proto(settings: ExplainSettings, exemplars: Mapping[int | str, bytes] | None = None
                      ) -> pb.ExplainOptions:
    """ExplainSettings (+ encoded exemplar per counter class, keyed as in ``counter_classes``) -> ExplainOptions;
    unset fields stay 0 / empty (the service default). A counter class given as a label is sent as a label."""
    exemplars = exemplars or {}
    options = pb.ExplainOptions(
        kinds=[enum_number("kinds", k) for k in settings.kinds], prediction_only=settings.prediction_only,
        top_e=settings.top_e or 0, dims=list(settings.dims), max_insecurities=settings.max_insecurities or 0,
        top_k=settings.top_k or 0, include_heatmaps=settings.include_heatmaps, ig_steps=settings.ig_steps or 0)
    for field in ("attribution", "score", "target"):
        value = getattr(settings, field)
        if value:
            setattr(options, field, enum_number(field, value))
    for counter in settings.counter_classes:
        message = pb.CounterClass(exemplar=exemplars.get(counter, b""))
        if isinstance(counter, int):
            message.class_id = counter
        else:
            message.label = counter
        options.counter_classes.append(message)
    if settings.coverage is not None:
        options.threshold.coverage = settings.coverage
    elif settings.absolute is not None:
        options.threshold.absolute = settings.absolute
    return options


def decode_mask(mask: pb.Mask) -> np.ndarray:
    """Mask (COCO RLE or bits) -> ``(height, width)`` bool array in original image pixels; ValueError if malformed."""
    encoding = mask.WhichOneof("encoding")
    payload = {encoding: getattr(mask, encoding)} if encoding else {}
    return masks.decode_wire(mask.height, mask.width, **payload)


def mask_from_proto(mask: pb.Mask, width: int, height: int, where: str = "mask") -> np.ndarray:
    """Mask (COCO RLE or bits) -> (height, width) bool; WireFormatError if its size or counts disagree."""
    if (mask.width, mask.height) != (width, height):
        raise WireFormatError(f"{where}: mask is {mask.width}x{mask.height}, image is {width}x{height}")
    try:
        array = decode_mask(mask)
    except ValueError as exc:
        raise WireFormatError(f"{where}: {exc}") from None
    if int(array.sum()) != mask.pixel_count:
        raise WireFormatError(f"{where}: pixel_count {mask.pixel_count} but {int(array.sum())} bits set")
    return array


def region_from_proto(region: pb.Region, width: int, height: int, where: str) -> Region:
    """Region at an image of ``width`` x ``height`` pixels (query or exemplar)."""
    mask = mask_from_proto(region.mask, width, height, f"{where}.mask")
    heatmap = None
    if region.HasField("heatmap") and region.heatmap.values:
        h, w = region.heatmap.height, region.heatmap.width
        if len(region.heatmap.values) != h * w:
            raise WireFormatError(f"{where}.heatmap: {len(region.heatmap.values)} values for {h}x{w}")
        heatmap = np.asarray(region.heatmap.values, dtype=np.float32).reshape(h, w)
    return Region(mask=mask, strength=float(region.strength), pixel_count=int(mask.sum()), bbox=mask_bbox(mask),
                  heatmap=heatmap)


def explanation_from_proto(item: pb.ImageExplanation, labels: tuple[str, ...] = (), input_size: int = 0
                           ) -> Explanation:
    """One ImageExplanation -> Explanation. ``labels`` fill in labels the answer lacks; ``input_size`` (the
    model's crop side) sets ``crop_box``. Exemplar masks are in the exemplar's own pixels (their stated size)."""
    status = item.status
    if status.code not in ("", "OK"):
        return Explanation(error=ImageFailure(status.code, status.message, status.field))
    width, height = item.width, item.height

    def ref(class_id: int, label: str = "") -> ClassRef:
        return ClassRef(class_id, label or (labels[class_id] if 0 <= class_id < len(labels) else str(class_id)))

    def attributive(message: pb.Attributive, where: str) -> Attributive:
        return Attributive(ref(message.class_id, message.label), region_from_proto(message.region, width, height,
                                                                                   where))

    def insecurity(message: pb.Insecurity, where: str) -> Insecurity:
        names = list(message.labels)
        classes = tuple(ref(c, names[k] if k < len(names) else "") for k, c in enumerate(message.class_ids))
        return Insecurity(classes, region_from_proto(message.region, width, height, where))

    deliberative = {group.dim: tuple(insecurity(ins, f"deliberative[V={group.dim}][{i}].region")
                                     for i, ins in enumerate(group.insecurities)) for group in item.deliberative}
    counterfactual = None
    if item.HasField("counterfactual"):
        cf = item.counterfactual
        sides = []
        for i, side in enumerate(cf.exemplars):
            region = None
            if side.HasField("region"):
                mask = side.region.mask
                region = region_from_proto(side.region, mask.width, mask.height,
                                           f"counterfactual.exemplars[{i}].region")
            sides.append(ExemplarSide(ref(side.class_id, side.label), side.exemplar_key or None, region,
                                      side.missing_reason))
        counterfactual = Counterfactual(
            predicted=ref(cf.predicted_id), counter=tuple(ref(c) for c in cf.counter_ids),
            query=region_from_proto(cf.query, width, height, "counterfactual.query"), exemplars=tuple(sides),
            strength=float(cf.strength), complete=cf.complete)
    return Explanation(
        width=width, height=height,
        top_classes=tuple(ClassScore(c.class_id, c.label or ref(c.class_id).label, float(c.probability))
                          for c in item.top_classes),
        score_name=enum_name("score", item.score_kind) or "softmax", score=float(item.score),
        attributive=attributive(item.attributive, "attributive.region") if item.HasField("attributive") else None,
        self_aware=attributive(item.self_aware, "self_aware.region") if item.HasField("self_aware") else None,
        deliberative=deliberative, counterfactual=counterfactual,
        crop_box=center_crop_box(width, height, input_size) if input_size and width and height else None,
    )


def summary_from_proto(info: pb.ModelInfo) -> ModelSummary:
    """ModelInfo -> ModelSummary (labels in class-id order)."""
    labels = [""] * len(info.classes)
    for c in info.classes:
        if 0 <= c.class_id < len(labels):
            labels[c.class_id] = c.label
    return ModelSummary(
        name=info.name, labels=tuple(labels), architecture=info.architecture, layer=info.layer,
        feature_grid=(info.feature_height, info.feature_width), input_size=info.input_size,
        scores=tuple(n for n in (enum_name("score", s) for s in info.scores) if n),
        attributions=tuple(n for n in (enum_name("attribution", a) for a in info.attributions) if n),
        exemplar_class_ids=tuple(info.exemplar_class_ids), has_hardness_predictor=info.has_hardness_predictor,
        max_images_per_request=info.limits.max_images_per_request, max_batch_size=info.max_batch_size)
