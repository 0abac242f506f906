"""``GaloreModel``: the kserve.Model that serves the engine through the service core
(``galore_service.service.ExplainService``): KServe's v1 and OIP v2 requests -> typed calls, answers -> responses.

Routes (KServe's own; README "Serve"):
  * v1 ``POST /v1/models/<name>:explain``: the body of TorchServe's ``/predictions`` (ExplainRequest in proto3 JSON
    or protobuf, or a raw image with its Content-Type); the answer is the ExplainResponse in the request's format
    (or Accept), with the HTTP status of galore_wire/status.py STATUS_TABLE. ``:predict`` is the same with the
    prediction only (top classes). A ``galore-rpc: GetModelInfo`` header asks for the serialized ModelInfo.
  * Open Inference Protocol v2 ``infer`` (REST and gRPC): input ``images`` (BYTES [N], encoded images), optional
    ``image_ids`` (BYTES [N]) and request parameter ``options`` (ExplainOptions in proto3 JSON); output
    ``explain_response`` (BYTES [1], the ExplainResponse in proto3 JSON). A request-level error is an OIP error
    with the table's HTTP status / gRPC code. The gateway's calls carry the ``galore-rpc`` parameter and the
    serialized galore.v1 request in input ``galore_request``; their answer is always the serialized galore.v1
    answer, status inside, exactly as the TorchServe handler answers the gateway.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging

import grpc
from google.protobuf import json_format
from grpc_interceptor.exceptions import GrpcException
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from galore.errors import GaloreError, InvalidArgument
from galore_api.v1 import explainer_pb2 as pb
from galore_service import convert
from galore_service.calls import Answer, Request
from galore_service.model import build_engine
from galore_service.service import ExplainService
from galore_service.wire import parse_explain_json
from galore_wire.contract import (DEADLINE_KEY, JSON, OIP_IMAGE_IDS, OIP_IMAGES, OIP_OPTIONS, OIP_REQUEST,
                                  OIP_RESPONSE, PROTOBUF, RPC_KEY, parse_deadline)
from galore_wire.status import grpc_code_name

from .archive import Archive
from .batcher import DEFAULT_JOB_QUEUE_SIZE, MicroBatcher
from .metrics import PrometheusMetrics

logger = logging.getLogger(__name__)


class AnswerError(Exception):
    """A v1 answer whose status is not OK: sent as it is, with its HTTP status (galore_kserve/server.py)."""

    def __init__(self, answer: Answer):
        super().__init__(answer.phrase)
        self.answer = answer


class OipError(GrpcException):
    """A request-level failure of a direct OIP v2 call: the table's gRPC code and "field: message" over gRPC
    (KServe's interceptor sends a GrpcException as it is), HTTP status + ``{"error", "status"}`` over REST
    (galore_kserve/server.py)."""

    def __init__(self, status: pb.Status):
        self.status = status
        super().__init__(details=f"{status.field}: {status.message}" if status.field else status.message,
                         status_code=grpc.StatusCode[grpc_code_name(status.grpc_code)])


class GaloreModel(Model):
    def __init__(self, name: str, archive: Archive, device: str = "cpu", workers: int = 1,
                 max_queued: int = DEFAULT_JOB_QUEUE_SIZE):
        super().__init__(name, return_response_headers=True)
        self.archive = archive
        self.device = device
        self.workers = workers
        self.max_queued = max_queued
        self.batcher: MicroBatcher | None = None

    def load(self) -> bool:
        config = self.archive.config
        Image.MAX_IMAGE_PIXELS = config.limits.max_pixels  # Pillow's decompression-bomb guard
        services = [ExplainService(build_engine(config, self.device), config, self.name) for _ in range(self.workers)]
        self.batcher = MicroBatcher(services, PrometheusMetrics(self.name), self.archive.batching, self.max_queued)
        self.ready = True
        logger.info("galore model %s ready: %d engine workers on %s, batches of <= %d within %.0f ms", self.name,
                    self.workers, self.device, self.archive.batching.max_batch_size,
                    self.archive.batching.max_delay_s * 1000)
        return self.ready

    def stop(self):
        if self.batcher is not None:
            self.batcher.close()
        super().stop()

    # ---- metadata (OIP v2 GET /v2/models/<name>) -------------------------------------------------------------
    def get_input_types(self) -> list[dict]:
        return [{"name": OIP_IMAGES, "datatype": "BYTES", "shape": [-1]},
                {"name": OIP_IMAGE_IDS, "datatype": "BYTES", "shape": [-1]},
                {"name": OIP_REQUEST, "datatype": "BYTES", "shape": [1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": OIP_RESPONSE, "datatype": "BYTES", "shape": [1]}]

    # ---- v1 -----------------------------------------------------------------------------------------------
    async def explain(self, payload, headers: dict[str, str] | None = None):
        return await self._v1(payload, headers or {}, prediction_only=False)

    async def predict(self, payload, headers: dict[str, str] | None = None, response_headers=None):
        if isinstance(payload, InferRequest):
            return await self._v2(payload, headers or {})
        return await self._v1(payload, headers or {}, prediction_only=True)

    async def postprocess(self, result, headers=None, response_headers=None):
        """A v1 Answer becomes its bytes and Content-Type; a failed one is raised with its HTTP status."""
        if not isinstance(result, Answer):
            return result
        if result.http_status >= 400:
            raise AnswerError(result)
        if response_headers is not None:
            response_headers["content-type"] = result.media_type
        return result.body

    async def _v1(self, payload, headers: dict[str, str], prediction_only: bool) -> Answer:
        headers = {k.lower(): v for k, v in headers.items()}
        # KServe decoded a JSON body when it is a dict (it decodes one without a Content-Type too)
        content_type = JSON if isinstance(payload, dict) else str(headers.get("content-type") or "")
        rpc = str(headers[RPC_KEY]) if RPC_KEY in headers else None
        return await self.batcher.submit(Request(
            rpc=rpc, body=payload, content_type=content_type, accept=str(headers.get("accept") or ""),
            deadline=parse_deadline(headers.get(DEADLINE_KEY)), request_id=str(headers.get("x-request-id", "")),
            prediction_only=prediction_only))

    # ---- OIP v2 -------------------------------------------------------------------------------------------
    async def _v2(self, request: InferRequest, headers: dict[str, str]) -> InferResponse:
        params = _parameters(request.parameters)
        try:
            if RPC_KEY in params:  # the gateway: galore.v1 bytes in, galore.v1 bytes out
                answer = await self.batcher.submit(Request(
                    rpc=str(params[RPC_KEY]), body=_one_input(request, OIP_REQUEST),
                    deadline=parse_deadline(params.get(DEADLINE_KEY)), request_id=request.id or ""))
                return self._response(request, answer.body)
            message = explain_request(request, params)
        except GaloreError as err:
            raise OipError(convert.status(err)) from None
        answer = await self.batcher.submit(Request(body=message.SerializeToString(), content_type=PROTOBUF,
                                                   accept=JSON, request_id=request.id or ""))
        if answer.http_status >= 400:
            status = pb.ExplainResponse()
            json_format.Parse(answer.body, status)
            raise OipError(status.status)
        return self._response(request, answer.body.decode("utf-8"))

    def _response(self, request: InferRequest, body: bytes | str) -> InferResponse:
        """Output ``explain_response``; binary (raw output contents) when the caller sent binary inputs or asked for
        binary outputs, as OIP clients such as tritonclient expect."""
        return InferResponse(response_id=request.id or "", model_name=self.name,
                             infer_outputs=[InferOutput(OIP_RESPONSE, [1], "BYTES", [body])],
                             use_binary_outputs=request.use_binary_outputs)


def explain_request(request: InferRequest, params: dict) -> pb.ExplainRequest:
    """OIP inputs ``images`` (+ ``image_ids``) and parameter ``options`` -> ExplainRequest; errors name the input."""
    names = [tensor.name for tensor in request.inputs]
    unknown = sorted(set(names) - {OIP_IMAGES, OIP_IMAGE_IDS})
    if unknown:
        raise InvalidArgument(f"inputs.{unknown[0]}", f"unknown input; send {OIP_IMAGES} (BYTES [N]) and optionally "
                                                      f"{OIP_IMAGE_IDS} (BYTES [N])")
    if OIP_IMAGES not in names:
        raise InvalidArgument(f"inputs.{OIP_IMAGES}", "required: the encoded images, BYTES [N]")
    images = _bytes_input(request, OIP_IMAGES)
    ids = _bytes_input(request, OIP_IMAGE_IDS) if OIP_IMAGE_IDS in names else [b""] * len(images)
    if len(ids) != len(images):
        raise InvalidArgument(f"inputs.{OIP_IMAGE_IDS}", f"{len(ids)} ids for {len(images)} images")
    message = pb.ExplainRequest()
    for data, image_id in zip(images, ids):
        try:
            message.images.append(pb.Image(data=data, id=image_id.decode("utf-8")))
        except UnicodeDecodeError:
            raise InvalidArgument(f"inputs.{OIP_IMAGE_IDS}", "ids must be UTF-8") from None
    options = params.get(OIP_OPTIONS)
    if options not in (None, ""):
        if isinstance(options, str):
            try:
                options = json.loads(options)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"parameters.{OIP_OPTIONS}", f"not JSON: {exc}") from None
        message.options.CopyFrom(parse_explain_json({"options": options}).options)
    return message


def _parameters(params) -> dict:
    """REST parameters (a dict) or gRPC ones (InferParameter messages) -> plain values."""
    values = {}
    for key, value in dict(params or {}).items():
        if hasattr(value, "WhichOneof"):
            choice = value.WhichOneof("parameter_choice")
            value = getattr(value, choice) if choice else None
        values[key] = value
    return values


def _bytes_input(request: InferRequest, name: str) -> list[bytes]:
    """The elements of BYTES input ``name``: raw bytes (gRPC, binary REST) or base64 strings (JSON REST)."""
    [tensor] = [t for t in request.inputs if t.name == name]
    field = f"inputs.{name}"
    if tensor.datatype != "BYTES":
        raise InvalidArgument(field, f"datatype must be BYTES, got {tensor.datatype}")
    try:
        values = list(tensor.as_numpy().reshape(-1))
    except Exception as exc:  # shape and data disagree, or unreadable binary data
        raise InvalidArgument(field, f"unreadable tensor ({type(exc).__name__}: {exc})") from None
    elements = []
    for i, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            elements.append(bytes(value))
        elif isinstance(value, str):
            if name == OIP_IMAGE_IDS:
                elements.append(value.encode("utf-8"))
                continue
            try:
                elements.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                raise InvalidArgument(f"{field}[{i}]", "a BYTES element sent as JSON text must be base64") from None
        else:
            raise InvalidArgument(f"{field}[{i}]", f"expected bytes, got {type(value).__name__}")
    return elements


def _one_input(request: InferRequest, name: str) -> bytes:
    tensors = [t for t in request.inputs if t.name == name]
    if len(tensors) != 1:
        raise InvalidArgument(f"inputs.{name}", "the gateway's call carries exactly one request")
    values = _bytes_input(request, name)
    if len(values) != 1:
        raise InvalidArgument(f"inputs.{name}", f"expected 1 element, got {len(values)}")
    return values[0]
