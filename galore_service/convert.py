"""galore.v1 protobuf <-> galore engine objects. Pure translation: the options are validated by
``galore.options.ExplainOptions`` (which names the request field), the wire numbers come from galore_wire."""
from __future__ import annotations

import enum

import torch

from galore import masks
from galore.errors import GaloreError, InvalidArgument
from galore.options import (Attribution, ExemplarPolicy, ExplainOptions, Kind, MaskEncoding, Score, Shape, Target,
                            Threshold, default_count)
from galore.results import Attributive, Counterfactual, ImageResult, Insecurity, Region
from galore_api.v1 import explainer_pb2 as pb
from galore_wire.contract import PROTO_ENUMS, engine_member, proto_number
from galore_wire.status import numbers


def to_galore_enum(galore_enum: type[enum.Enum], number: int, field: str, default=None):
    """Proto enum number -> galore enum member; UNSPECIFIED (0) -> ``default``; unknown numbers are errors."""
    try:
        found = engine_member(pb.DESCRIPTOR, galore_enum, number)
    except KeyError as exc:
        raise InvalidArgument(field, exc.args[0]) from None
    if found is None:
        if default is None:
            raise InvalidArgument(field, "UNSPECIFIED is not allowed here")
        return default
    return found


def to_proto_enum(member: enum.Enum | str) -> int:
    """galore enum member (or its value string) -> proto enum number."""
    if isinstance(member, str):
        for galore_enum in PROTO_ENUMS:
            for candidate in galore_enum:
                if member in (candidate.value, candidate.name):
                    return proto_number(pb.DESCRIPTOR, candidate)
        raise ValueError(f"no proto enum for {member!r}")
    return proto_number(pb.DESCRIPTOR, member)


def _count(value: int, default: int) -> int:
    """A proto count: 0 (unset) -> ``default``; any other value as sent (ExplainOptions validates it)."""
    return value or default


def _threshold(message: pb.ExplainOptions) -> Threshold:
    """Unset: the default; else the one rule set (Threshold validates the range, naming the field)."""
    rule = message.threshold.WhichOneof("rule") if message.HasField("threshold") else None
    return Threshold(**{rule: getattr(message.threshold, rule)}) if rule else Threshold()


def _kinds(message: pb.ExplainOptions) -> frozenset[Kind]:
    kinds = [to_galore_enum(Kind, k, f"options.kinds[{i}]") for i, k in enumerate(message.kinds)]
    if message.prediction_only:
        if kinds:
            raise InvalidArgument("options.prediction_only", "set either prediction_only or kinds, not both")
        return frozenset()
    return frozenset(kinds) if kinds else frozenset(Kind)


def to_options(message: pb.ExplainOptions, counter_ids: tuple[int, ...], num_classes: int,
               explained_class: int | None = None) -> ExplainOptions:
    """ExplainOptions proto -> galore ExplainOptions (counter classes and the explained class already resolved to
    ids), validated against a model of ``num_classes`` classes (``ExplainOptions.check_classes``). ``dims``: the
    distinct V in increasing order (an error's ``options.dims[i]`` counts in that order)."""
    defaults = ExplainOptions()
    options = ExplainOptions(
        kinds=_kinds(message),
        attribution=to_galore_enum(Attribution, message.attribution, "options.attribution", defaults.attribution),
        score=to_galore_enum(Score, message.score, "options.score", defaults.score),
        target=to_galore_enum(Target, message.target, "options.target", defaults.target),
        clip_negative=message.clip_negative if message.HasField("clip_negative") else defaults.clip_negative,
        normalize=message.normalize,
        # defaults shrink to models with fewer classes than the default E / top-k
        top_e=_count(message.top_e, default_count("top_e", num_classes)),
        dims=tuple(sorted(set(message.dims))) or defaults.dims,
        max_insecurities=_count(message.max_insecurities, defaults.max_insecurities),
        counter_classes=counter_ids,
        threshold=_threshold(message),
        include_heatmaps=message.include_heatmaps,
        top_k=_count(message.top_k, default_count("top_k", num_classes)),
        ig_steps=_count(message.ig_steps, defaults.ig_steps),
        mask_encoding=to_galore_enum(MaskEncoding, message.mask_encoding, "options.mask_encoding",
                                     defaults.mask_encoding),
        explained_class=explained_class,
        exemplar_policy=to_galore_enum(ExemplarPolicy, message.exemplar_policy, "options.exemplar_policy",
                                       defaults.exemplar_policy),
    )
    options.check_classes(num_classes, counts=True)
    return options


def status(error: GaloreError | None) -> pb.Status:
    """A GaloreError (or None for success) -> Status, numbers from galore_wire.status.STATUS_TABLE."""
    if error is None:
        grpc_code, http_status = numbers("OK")
        return pb.Status(code="OK", grpc_code=grpc_code, http_status=http_status)
    grpc_code, http_status = numbers(error.code)
    return pb.Status(code=error.code, grpc_code=grpc_code, http_status=http_status, message=error.message,
                     field=error.field)


def mask(value: Region, encoding: MaskEncoding = MaskEncoding.RLE) -> pb.Mask:
    """A Region's mask in original pixels -> Mask: COCO RLE straight from the working-grid cells (cost independent
    of the photo's size), or bits (row-major, MSB first, as numpy.packbits) of the full mask."""
    height, width = value.frame.shape
    message = pb.Mask(width=width, height=height, pixel_count=int(value.pixel_count))
    if encoding is MaskEncoding.BITS:
        message.bits = masks.pack_bits(value.frame.expand(value.cells))
    else:
        message.coco_rle = masks.coco_string(masks.rle_counts(value.cells, value.frame))
    if value.bbox is not None:
        x0, y0, x1, y1 = (int(v) for v in value.bbox)
        message.bbox.CopyFrom(pb.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1))
    return message


def region(value: Region, how: ExplainOptions) -> pb.Region:
    """A Region as ``how`` (the request's options) asks: its mask encoding, with or without the heatmap."""
    message = pb.Region(mask=mask(value, how.mask_encoding), strength=float(value.strength))
    if how.include_heatmaps and value.heatmap is not None:
        heat = value.heatmap.detach().to("cpu", torch.float32)
        message.heatmap.CopyFrom(pb.Heatmap(height=heat.shape[0], width=heat.shape[1],
                                            values=heat.reshape(-1).tolist()))
    return message


def _class_region(value: Attributive, message: pb.Attributive, labels, how: ExplainOptions) -> None:
    message.CopyFrom(pb.Attributive(class_id=value.class_id, label=labels[value.class_id],
                                    region=region(value.region, how), probability=float(value.probability)))


def _insecurities(value: dict[int, list[Insecurity]], message, labels, how: ExplainOptions) -> None:
    for dim in sorted(value):  # V -> insecurities, strongest first
        group = message.add(dim=dim)
        for item in sorted(value[dim], key=lambda item: item.region.strength, reverse=True):
            group.insecurities.add(class_ids=list(item.class_ids), labels=[labels[c] for c in item.class_ids],
                                   region=region(item.region, how))


def _counterfactual(value: Counterfactual, message: pb.Counterfactual, labels, how: ExplainOptions) -> None:
    message.CopyFrom(pb.Counterfactual(predicted_id=value.predicted_id, counter_ids=list(value.counter_ids),
                                       query=region(value.query, how), strength=float(value.strength),
                                       complete=bool(value.complete)))
    for side in value.exemplars:
        item = message.exemplars.add(class_id=side.class_id, label=labels[side.class_id],
                                     exemplar_key=side.exemplar_key or "", missing_reason=side.missing_reason)
        if side.region is not None:
            item.region.CopyFrom(region(side.region, how))


# A kind's result -> its field of ImageExplanation (both named ``kind.value``), by the kind's shape.
_WRITERS = {Shape.CLASS_REGION: _class_region, Shape.INSECURITIES: _insecurities,
            Shape.COUNTERFACTUAL: _counterfactual}


def image_explanation(image_id: str, result: ImageResult, labels, how: ExplainOptions) -> pb.ImageExplanation:
    """One engine result -> ImageExplanation (its own status; no explanation fields when it failed)."""
    message = pb.ImageExplanation(id=image_id, status=status(result.error))
    if result.error is not None:
        return message
    message.width, message.height = result.width, result.height
    for c in result.top_classes:
        message.top_classes.add(class_id=c.class_id, label=c.label, probability=float(c.probability))
    message.score = float(result.score)
    if result.score_name:
        message.score_kind = to_proto_enum(result.score_name if isinstance(result.score_name, str)
                                           else result.score_name)
    for kind in Kind:
        value = getattr(result, kind.value)
        if value:  # None, or no insecurity of any V
            _WRITERS[kind.shape](value, getattr(message, kind.value), labels, how)
    return message
