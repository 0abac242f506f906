"""galore.v1 protobuf -> the client's typed objects (``Explanation``, ``ModelSummary``), and the client's
``ExplainSettings`` -> the proto's ``ExplainOptions``: the client's one conversion in each direction.

Masks are unpacked from the service's bit packing to ``(H0, W0)`` bool arrays and checked against the image size;
heatmaps become ``(h, w)`` float32 arrays; every class id travels with its label. Enum spellings come from
``galore_wire.contract`` and defaults from ``galore.options.ExplainOptions`` (a field equal to its default is left
unset, which the proto defines as that default).

Example:
    >>> options = settings_to_proto(ExplainSettings(kinds=("deliberative",), dims=(2, 3), top_e=6))
    >>> list(options.dims), options.top_e
    ([2, 3], 6)
"""
from __future__ import annotations

import enum
from typing import Mapping

import numpy as np

from galore import masks
from galore.options import ENUM_FIELDS, Attribution, ExplainOptions, Kind, Score, Shape, Threshold
from galore_api.v1 import explainer_pb2 as pb
from galore_wire.contract import engine_member, proto_number

from .results import (Attributive, ClassRef, ClassScore, Counterfactual, ExemplarSide, Explanation, ImageFailure,
                      Insecurity, Region, center_crop_box, mask_bbox)
from .settings import ExplainSettings, ModelSummary

_DEFAULTS = ExplainOptions()


class WireFormatError(ValueError):
    """The service's answer does not match its own contract (e.g. a mask of the wrong size)."""


def enum_value(enum_type: type[enum.Enum], number: int) -> str:
    """Proto enum number -> the engine member's value ('grad_cam'); '' for UNSPECIFIED or unknown numbers."""
    try:
        found = engine_member(pb.DESCRIPTOR, enum_type, number)
    except KeyError:
        return ""
    return "" if found is None else found.value


def options_to_proto(options: ExplainOptions, counter_classes: tuple[int | str, ...] = (),
                     exemplars: Mapping[int | str, bytes] | None = None,
                     explained_class: int | str | None = None) -> pb.ExplainOptions:
    """Engine options (+ counter classes as ids or labels, + an encoded exemplar per counter class) -> proto.

    Fields equal to the engine default stay unset (the proto's "default"), so a model with fewer classes than the
    default E or top-k still gets its own shrunk defaults. A counter class given as a label is sent as a label.
    """
    exemplars = exemplars or {}
    message = pb.ExplainOptions(normalize=options.normalize, include_heatmaps=options.include_heatmaps)
    if not options.kinds:
        message.prediction_only = True
    elif options.kinds != _DEFAULTS.kinds:
        message.kinds.extend(sorted(proto_number(pb.DESCRIPTOR, k) for k in options.kinds))
    for name in ENUM_FIELDS:
        if getattr(options, name) != getattr(_DEFAULTS, name):
            setattr(message, name, proto_number(pb.DESCRIPTOR, getattr(options, name)))
    for name in ("top_e", "max_insecurities", "top_k", "ig_steps"):
        if getattr(options, name) != getattr(_DEFAULTS, name):
            setattr(message, name, getattr(options, name))
    if options.dims != _DEFAULTS.dims:
        message.dims.extend(options.dims)
    if options.clip_negative != _DEFAULTS.clip_negative:
        message.clip_negative = options.clip_negative
    if options.threshold != Threshold():
        if options.threshold.coverage is not None:
            message.threshold.coverage = options.threshold.coverage
        else:
            message.threshold.absolute = options.threshold.absolute
    for counter in counter_classes or options.counter_classes:
        item = pb.CounterClass(exemplar=exemplars.get(counter, b""))
        if isinstance(counter, int):
            item.class_id = counter
        else:
            item.label = counter
        message.counter_classes.append(item)
    explained = options.explained_class if explained_class is None else explained_class
    if isinstance(explained, int):
        message.explained_class.class_id = explained
    elif explained is not None:
        message.explained_class.label = explained
    return message


def settings_to_proto(settings: ExplainSettings, exemplars: Mapping[int | str, bytes] | None = None
                      ) -> pb.ExplainOptions:
    """ExplainSettings (+ encoded exemplar per counter class, keyed as in ``counter_classes``) -> ExplainOptions."""
    return options_to_proto(settings.options, settings.counter_classes, exemplars, settings.explained)


def mask_from_proto(mask: pb.Mask, width: int | None = None, height: int | None = None, where: str = "mask"
                    ) -> np.ndarray:
    """Mask (COCO RLE or bits) -> (height, width) bool in original pixels: the client's one mask decoder.
    WireFormatError if it is malformed or its size or counts disagree with the image (``width`` / ``height``;
    None: the mask's own size)."""
    width = mask.width if width is None else width
    height = mask.height if height is None else height
    if (mask.width, mask.height) != (width, height):
        raise WireFormatError(f"{where}: mask is {mask.width}x{mask.height}, image is {width}x{height}")
    encoding = mask.WhichOneof("encoding")
    try:
        array = masks.decode_wire(height, width, **({encoding: getattr(mask, encoding)} if encoding else {}))
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


class _Reader:
    """Reads one image's kind results (each the field ``kind.value``) by the kind's shape; class ids travel with
    labels (``labels`` fill in those the answer lacks); masks are checked against the image size."""

    def __init__(self, item: pb.ImageExplanation, labels: tuple[str, ...]):
        self.item, self.labels = item, labels

    def ref(self, class_id: int, label: str = "") -> ClassRef:
        return ClassRef(class_id, label or (self.labels[class_id] if 0 <= class_id < len(self.labels)
                                            else str(class_id)))

    def region(self, message: pb.Region, where: str) -> Region:
        return region_from_proto(message, self.item.width, self.item.height, where)

    def read(self, kind: Kind):
        name = kind.value
        if kind.shape is Shape.INSECURITIES:
            return self.insecurities(getattr(self.item, name), name)
        return getattr(self, kind.shape.value)(getattr(self.item, name), name) if self.item.HasField(name) else None

    def class_region(self, message: pb.Attributive, where: str) -> Attributive:
        return Attributive(self.ref(message.class_id, message.label), self.region(message.region, f"{where}.region"),
                           float(message.probability))

    def insecurities(self, groups, where: str) -> dict[int, tuple[Insecurity, ...]]:
        def insecurity(message: pb.Insecurity, at: str) -> Insecurity:
            names = list(message.labels)
            classes = tuple(self.ref(c, names[k] if k < len(names) else "") for k, c in enumerate(message.class_ids))
            return Insecurity(classes, self.region(message.region, at))

        return {group.dim: tuple(insecurity(ins, f"{where}[V={group.dim}][{i}].region")
                                 for i, ins in enumerate(group.insecurities)) for group in groups}

    def counterfactual(self, cf: pb.Counterfactual, where: str) -> Counterfactual:
        sides = []
        for i, side in enumerate(cf.exemplars):
            region = None
            if side.HasField("region"):  # in the exemplar's own pixels (their stated size)
                mask = side.region.mask
                region = region_from_proto(side.region, mask.width, mask.height, f"{where}.exemplars[{i}].region")
            sides.append(ExemplarSide(self.ref(side.class_id, side.label), side.exemplar_key or None, region,
                                      side.missing_reason))
        return Counterfactual(predicted=self.ref(cf.predicted_id), counter=tuple(self.ref(c) for c in cf.counter_ids),
                              query=self.region(cf.query, f"{where}.query"), exemplars=tuple(sides),
                              strength=float(cf.strength), complete=cf.complete)


def explanation_from_proto(item: pb.ImageExplanation, labels: tuple[str, ...] = (), input_size: int = 0
                           ) -> Explanation:
    """One ImageExplanation -> Explanation. ``labels`` fill in labels the answer lacks; ``input_size`` (the
    model's crop side) sets ``crop_box``. Exemplar masks are in the exemplar's own pixels (their stated size)."""
    status = item.status
    if status.code not in ("", "OK"):
        return Explanation(error=ImageFailure(status.code, status.message, status.field))
    width, height = item.width, item.height
    reader = _Reader(item, labels)
    return Explanation(
        width=width, height=height,
        top_classes=tuple(ClassScore(c.class_id, c.label or reader.ref(c.class_id).label, float(c.probability))
                          for c in item.top_classes),
        score_name=enum_value(Score, item.score_kind) or _DEFAULTS.score.value, score=float(item.score),
        crop_box=center_crop_box(width, height, input_size) if input_size and width and height else None,
        **{kind.value: reader.read(kind) for kind in Kind},
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
        scores=tuple(n for n in (enum_value(Score, s) for s in info.scores) if n),
        attributions=tuple(n for n in (enum_value(Attribution, a) for a in info.attributions) if n),
        exemplar_class_ids=tuple(info.exemplar_class_ids),
        exemplars_per_class=tuple(sorted((int(c), int(n)) for c, n in info.exemplars_per_class.items())),
        has_hardness_predictor=info.has_hardness_predictor,
        max_images_per_request=info.limits.max_images_per_request, max_batch_size=info.max_batch_size)
