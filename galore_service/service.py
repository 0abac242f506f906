"""The host-neutral service core: typed calls in (``calls.Request``), typed answers out (``calls.Answer``).

``ExplainService.answer(requests)``: one batch of calls -> one ``engine.explain`` call -> exactly one Answer per
call, in order. Every image of every call is flattened into a single engine call (one forward for the batch).
Options belong to their own call only; a bad call or image gets its own status and never fails the others. The
hosts (handlers/galore_handler.py for TorchServe, galore_kserve/ for KServe, ``--local``) only map their own
request shapes to ``Request`` and send the ``Answer`` back; the service knows none of them.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from galore import ImageRequest
from galore.errors import DeadlineExceeded, DeviceUnusable, GaloreError, InvalidArgument, ResourceExhausted
from galore.options import ExplainOptions
from galore.results import ImageResult
from galore_api.v1 import explainer_pb2 as pb
from galore_wire.contract import MAX_ID_CHARS, Call

from . import convert
from .calls import Answer, Request
from .config import HandlerConfig
from .decode import DRAFT_OVERSAMPLE, decode_image
from .metrics import WorkerMetrics
from .wire import encode, read_request, response_type_for_error

logger = logging.getLogger(__name__)
EXIT_DEVICE_UNUSABLE = 75  # the worker's exit status when its GPU context is broken (EX_TEMPFAIL: restart it)


@dataclass
class Prepared:
    """One call of the batch after decoding: its engine inputs, or the error that stopped it."""

    response_type: str
    call: Call = Call.EXPLAIN
    request_id: str = ""
    due: float | None = None  # the caller's deadline, Unix seconds
    error: GaloreError | None = None
    options: ExplainOptions | None = None
    ids: list[str] = field(default_factory=list)
    # per image: an engine request, or the error that stopped that image before the engine
    items: list[object] = field(default_factory=list)


class ExplainService:
    """Owns the engine and the limits; ``answer`` is every host's one call into it."""

    def __init__(self, engine, config: HandlerConfig, model_name: str):
        self.engine = engine
        self.config = config
        self.model_name = model_name
        self.labels = list(engine.info.labels)

    # ---- request side -------------------------------------------------------------------------------------
    def _class_id(self, ref: pb.ClassRef | pb.CounterClass, field: str) -> int:
        """A class reference (its oneof ``class_ref``: class id or label) -> the model's class id. The service's one
        label resolution (by the engine's ``class_id``); errors name ``field`` and the reference that was set."""
        which = ref.WhichOneof("class_ref")
        if which is None:
            raise InvalidArgument(field, "set class_id or label")
        try:
            return int(self.engine.class_id(getattr(ref, which)))
        except GaloreError as err:
            raise InvalidArgument(f"{field}.{which}", err.message) from None

    def _prepare_explain(self, message: pb.ExplainRequest, prepared: Prepared, request_id: str):
        limits = self.config.limits
        min_side = DRAFT_OVERSAMPLE * self.engine.preprocess.resize  # JPEGs: the smallest DCT scale that keeps it
        if not message.images:
            raise InvalidArgument("images", "at least one image is required")
        exemplar_count = sum(1 for c in message.options.counter_classes if c.exemplar)
        total = len(message.images) + exemplar_count
        if total > limits.max_images_per_request:
            raise ResourceExhausted(
                "images", f"{len(message.images)} images + {exemplar_count} exemplars = {total}, "
                          f"limit is {limits.max_images_per_request} per request")
        counter_ids = tuple(self._class_id(counter, f"options.counter_classes[{i}]")
                            for i, counter in enumerate(message.options.counter_classes))
        explained = (self._class_id(message.options.explained_class, "options.explained_class")
                     if message.options.HasField("explained_class") else None)
        options = convert.to_options(message.options, counter_ids, len(self.labels), explained)
        exemplars, sizes = {}, {}
        for i, counter in enumerate(message.options.counter_classes):
            if counter.exemplar:
                exemplars[counter_ids[i]], sizes[counter_ids[i]] = decode_image(
                    counter.exemplar, f"options.counter_classes[{i}].exemplar", limits, min_side)
        prepared.options = options
        for j, image in enumerate(message.images):
            prepared.ids.append(image.id or f"images[{j}]")
            field = f"images[{j}].data"
            try:
                if len(image.id) > MAX_ID_CHARS:
                    raise InvalidArgument(f"images[{j}].id", f"at most {MAX_ID_CHARS} characters")
                tensor, original = decode_image(image.data, field, limits, min_side)
                prepared.items.append(ImageRequest(
                    image=tensor, options=options, exemplars=dict(exemplars), original_size=original,
                    exemplar_sizes=dict(sizes), field=field, tag=f"request {request_id or '?'} {field}"))
            except GaloreError as err:
                prepared.items.append(err)

    def prepare(self, request: Request) -> Prepared:
        """Parses and decodes one call; one whose deadline has passed is dropped here, before any work."""
        if request.deadline is not None and time.time() >= request.deadline:
            return Prepared(response_type=response_type_for_error(request), request_id=request.request_id,
                            error=DeadlineExceeded("", "the caller's deadline passed while the request waited in "
                                                       "the queue; dropped unprocessed"))
        try:
            wire = read_request(request)
        except GaloreError as err:
            return Prepared(response_type=response_type_for_error(request), request_id=request.request_id,
                            error=err)
        prepared = Prepared(response_type=wire.response_type, call=wire.call, due=request.deadline,
                            request_id=request.request_id)
        if wire.call is Call.EXPLAIN and request.prediction_only:
            wire.message.options.ClearField("kinds")
            wire.message.options.prediction_only = True
        if wire.call is Call.EXPLAIN:
            try:
                self._prepare_explain(wire.message, prepared, request.request_id)
            except GaloreError as err:
                prepared.error = err
            except Exception:  # a bug must cost this call only
                logger.exception("cannot prepare request %s", request.request_id or "?")
                prepared.error = GaloreError("", "internal error while reading the request; see the worker log")
            if prepared.error is not None:
                prepared.items.clear()
        return prepared

    def refuse(self, request: Request, error: GaloreError, metrics: WorkerMetrics | None = None,
               retry_after: str = "") -> Answer:
        """The answer to a call the host will not run (the KServe host's full queue): ``error`` is its status,
        ``retry_after`` its ``Retry-After`` seconds."""
        prepared = Prepared(response_type=response_type_for_error(request), request_id=request.request_id,
                            error=error)
        answer = self._answer(prepared, [], metrics or WorkerMetrics(self.model_name))
        return Answer(answer.body, answer.media_type, answer.http_status, answer.phrase, retry_after)

    # ---- response side ------------------------------------------------------------------------------------
    def model_info(self) -> pb.ModelInfo:
        info = self.engine.info
        h, w = info.feature_grid
        message = pb.ModelInfo(
            name=self.model_name, architecture=str(getattr(info, "name", self.config.model)), layer=str(info.layer),
            feature_height=int(h), feature_width=int(w), input_size=int(info.input_size),
            exemplar_class_ids=[int(c) for c in info.exemplar_classes],
            has_hardness_predictor=bool(info.has_hardness), max_batch_size=self.config.batch_size,
            working_grid=int(info.working_grid), precision=convert.to_proto_enum(info.precision),
        )
        for class_id, count in info.exemplars_per_class.items():
            message.exemplars_per_class[int(class_id)] = int(count)
        message.classes.extend(pb.ClassInfo(class_id=i, label=label) for i, label in enumerate(self.labels))
        message.scores.extend(convert.to_proto_enum(s) for s in info.scores)
        message.attributions.extend(convert.to_proto_enum(a) for a in info.attributions)
        limits = self.config.limits
        message.limits.CopyFrom(pb.Limits(
            max_image_bytes=limits.max_image_bytes, max_pixels=limits.max_pixels,
            max_images_per_request=limits.max_images_per_request,
            max_request_bytes=self.config.max_request_bytes, max_response_bytes=self.config.max_response_bytes))
        return message

    def explain_response(self, prepared: Prepared, results: list[ImageResult]) -> pb.ExplainResponse:
        """Request status: its own error, else the first image error when every image failed, else OK."""
        response = pb.ExplainResponse(model=self.model_name)
        if prepared.error is not None:
            response.status.CopyFrom(convert.status(prepared.error))
            return response
        for image_id, result in zip(prepared.ids, results):
            response.images.append(convert.image_explanation(image_id, result, self.labels, prepared.options))
        failed = [r.error for r in results if r.error is not None]
        response.status.CopyFrom(convert.status(failed[0] if len(failed) == len(results) else None))
        return response

    def answer(self, requests: list[Request], metrics: WorkerMetrics | None = None) -> list[Answer]:
        """Exactly one Answer per call, in order; the calls' images go through one engine call. ``metrics``: the
        host's emitter (None: record nothing)."""
        metrics = metrics or WorkerMetrics(self.model_name)
        start = time.perf_counter()
        prepared = [self.prepare(request) for request in requests]
        metrics.dropped("deadline", sum(1 for p in prepared if isinstance(p.error, DeadlineExceeded)))
        flat = [item for p in prepared if p.error is None for item in p.items if not isinstance(item, GaloreError)]
        decode_s = time.perf_counter() - start
        engine_results = self._run_engine(flat, metrics, decode_s)
        now = time.time()
        metrics.late(sum(1 for p in prepared if p.error is None and p.items and p.due is not None and now >= p.due))
        encode_start = time.perf_counter()
        answers = []
        for p in prepared:
            results = []
            for item in p.items:
                results.append(ImageResult(error=item) if isinstance(item, GaloreError) else next(engine_results))
            try:
                answers.append(self._answer(p, results, metrics))
            except Exception:  # a bug must cost this call only
                logger.exception("cannot encode the answer to request %s", p.request_id or "?")
                p.error = GaloreError("", "internal error while encoding the answer; see the worker log")
                answers.append(self._answer(p, [], metrics))
        metrics.stage("encode", time.perf_counter() - encode_start)
        return answers

    def _run_engine(self, flat: list, metrics: WorkerMetrics, decode_s: float):
        """Runs the one engine call; an unexpected failure becomes an INTERNAL status for each image.

        Stage metrics: decode = bytes -> tensors here + the engine's preprocess; then forward, attribution, regions.
        """
        timings: dict[str, float] = {}
        hits, misses = self._cache_counts()
        if not flat:
            metrics.stage("decode", decode_s)
            return iter(())
        try:
            results = self.engine.explain(flat, timings=timings)
            if len(results) != len(flat):
                raise RuntimeError(f"engine returned {len(results)} results for {len(flat)} images")
        except GaloreError as err:  # should be per image, but never let it take the batch down
            results = [ImageResult(error=err) for _ in flat]
        except DeviceUnusable:  # every later batch would fail too: exit, the supervisor starts a fresh worker
            logger.critical("the device is unusable; exiting with status %d so that the worker is restarted",
                            EXIT_DEVICE_UNUSABLE, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_DEVICE_UNUSABLE)
        except Exception:  # the engine isolates failures per image; this is a last resort
            logger.exception("engine failed on a batch of %d images", len(flat))
            internal = GaloreError("", "internal error while explaining the batch; see the worker log")
            results = [ImageResult(error=internal) for _ in flat]
        metrics.batch_size(len(flat))
        metrics.stage("decode", decode_s + timings.get("preprocess", 0.0))
        for stage in ("forward", "attribution", "regions"):
            if stage in timings:
                metrics.stage(stage, timings[stage])
        new_hits, new_misses = self._cache_counts()
        metrics.exemplar_cache("hit", new_hits - hits)
        metrics.exemplar_cache("miss", new_misses - misses)
        return iter(results)

    def _cache_counts(self) -> tuple[int, int]:
        return int(getattr(self.engine, "cache_hits", 0)), int(getattr(self.engine, "cache_misses", 0))

    def _answer(self, prepared: Prepared, results: list[ImageResult], metrics: WorkerMetrics) -> Answer:
        if prepared.call is Call.MODEL_INFO and prepared.error is None:
            return Answer(encode(self.model_info(), prepared.response_type), prepared.response_type, 200, "OK")
        response = self.explain_response(prepared, results)
        answered = sum(1 for r in results if r.error is None)
        metrics.images("prediction", answered)
        if answered:
            for kind in prepared.options.kinds:
                metrics.images(kind.value, answered)
        status = response.status
        return Answer(encode(response, prepared.response_type), prepared.response_type, status.http_status,
                      status.code)

