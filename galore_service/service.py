"""One TorchServe batch -> one ``engine.explain`` call -> one answer per request.

Every image of every request in the batch is flattened into a single engine call (one forward for the batch).
Options belong to their own request only; a bad request or image gets its own status and never fails the others.
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

from . import convert
from .config import HandlerConfig
from .decode import DRAFT_OVERSAMPLE, decode_image
from .metrics import WorkerMetrics
from .wire import PREDICTION_ONLY_KEY, Call, deadline, encode, read_request, response_type_for_error

logger = logging.getLogger(__name__)
MAX_ID_CHARS = 256
EXIT_DEVICE_UNUSABLE = 75  # the worker's exit status when its GPU context is broken (EX_TEMPFAIL: restart it)


@dataclass
class Prepared:
    """One request of the batch after decoding: its engine inputs, or the error that stopped it."""

    response_type: str
    call: Call = Call.EXPLAIN
    due: float | None = None  # the caller's deadline, Unix seconds
    error: GaloreError | None = None
    options: ExplainOptions | None = None
    ids: list[str] = field(default_factory=list)
    # per image: an engine request, or the error that stopped that image before the engine
    items: list[object] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """What the handler returns for one request: bytes, media type, HTTP status and phrase; ``retry_after``: the
    ``Retry-After`` header of a refused request (seconds, galore.backpressure), "" for none."""

    body: bytes
    media_type: str
    http_status: int
    phrase: str
    retry_after: str = ""


class ExplainService:
    """Owns the engine and the limits; ``answer_batch`` is the handler's whole job."""

    def __init__(self, engine, config: HandlerConfig, model_name: str):
        self.engine = engine
        self.config = config
        self.model_name = model_name
        self.labels = list(engine.info.labels)

    # ---- request side -------------------------------------------------------------------------------------
    def _counter_ids(self, options: pb.ExplainOptions) -> tuple[int, ...]:
        ids = []
        for i, counter in enumerate(options.counter_classes):
            ref = counter.WhichOneof("class_ref")
            if ref is None:
                raise InvalidArgument(f"options.counter_classes[{i}]", "set class_id or label")
            try:
                ids.append(int(self.engine.class_id(getattr(counter, ref))))
            except GaloreError as err:
                raise InvalidArgument(f"options.counter_classes[{i}].{ref}", err.message) from None
        return tuple(ids)

    def _explained_id(self, options: pb.ExplainOptions) -> int | None:
        if not options.HasField("explained_class"):
            return None
        ref = options.explained_class.WhichOneof("class_ref")
        if ref is None:
            raise InvalidArgument("options.explained_class", "set class_id or label")
        try:
            return int(self.engine.class_id(getattr(options.explained_class, ref)))
        except GaloreError as err:
            raise InvalidArgument(f"options.explained_class.{ref}", err.message) from None

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
        counter_ids = self._counter_ids(message.options)
        options = convert.to_options(message.options, counter_ids, len(self.labels),
                                     self._explained_id(message.options))
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

    def prepare(self, row: dict, context, idx: int) -> Prepared:
        """Parses and decodes one request; one whose deadline has passed is dropped here, before any work."""
        due = deadline(row, context, idx)
        if due is not None and time.time() >= due:
            return Prepared(response_type=response_type_for_error(context, idx, row), error=DeadlineExceeded(
                "", "the caller's deadline passed while the request waited in the queue; dropped unprocessed"))
        try:
            wire = read_request(row, context, idx)
        except GaloreError as err:
            return Prepared(response_type=response_type_for_error(context, idx, row), error=err)
        prepared = Prepared(response_type=wire.response_type, call=wire.call, due=due)
        if wire.call is Call.EXPLAIN and row.get(PREDICTION_ONLY_KEY):  # KServe v1 :predict
            wire.message.options.ClearField("kinds")
            wire.message.options.prediction_only = True
        if wire.call is Call.EXPLAIN:
            try:
                self._prepare_explain(wire.message, prepared, _request_id(context, idx))
            except GaloreError as err:
                prepared.error = err
            except Exception:  # a bug must cost this request only
                logger.exception("cannot prepare request %s", _request_id(context, idx))
                prepared.error = GaloreError("", "internal error while reading the request; see the worker log")
            if prepared.error is not None:
                prepared.items.clear()
        return prepared

    def refuse(self, row: dict, context, error: GaloreError, metrics: WorkerMetrics) -> Answer:
        """The answer to a request the host will not run (the KServe host's full queue): ``error`` is its status."""
        prepared = Prepared(response_type=response_type_for_error(context, 0, row), error=error)
        return self._answer(prepared, [], metrics)

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

    def answer_batch(self, rows: list[dict], context, metrics: WorkerMetrics) -> list[Answer]:
        """Exactly one Answer per row, in order."""
        start = time.perf_counter()
        prepared = [self.prepare(row, context, idx) for idx, row in enumerate(rows)]
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
            except Exception:  # a bug must cost this request only
                logger.exception("cannot encode an answer")
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


def _request_id(context, idx: int) -> str:
    """TorchServe's id of request ``idx`` of the batch (in its access log too), or ""."""
    try:
        return str((getattr(context, "request_ids", None) or {}).get(idx, ""))
    except AttributeError:
        return ""
