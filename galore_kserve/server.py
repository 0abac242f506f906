"""KServe's ModelServer, bound to one address (loopback for ``make serve``; KServe itself binds every interface),
with the answers galore's routes need: a v1 answer keeps its status and body (an ExplainResponse, as on TorchServe),
a direct OIP v2 failure carries the status, KServe's own JSON decode error on a v1 route is an ExplainResponse
naming ``body``, as the TorchServe handler answers it, and binary image tensors over REST are a 400, not a 500."""
from __future__ import annotations

import asyncio
import logging
from concurrent import futures

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InferenceError, InvalidInput, inference_error_handler, invalid_input_handler
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from galore.errors import InvalidArgument
from galore_api.v1 import explainer_pb2 as pb
from galore_service import convert
from galore_wire.backpressure import RETRY_AFTER_HEADER
from galore_wire.contract import JSON

from .model import AnswerError, OipError

logger = logging.getLogger(__name__)
V1_VERBS = (":predict", ":explain")


async def answer_error_handler(_: Request, exc: AnswerError) -> Response:
    answer = exc.answer
    headers = {RETRY_AFTER_HEADER: answer.retry_after} if answer.retry_after else None
    return Response(content=answer.body, status_code=answer.http_status, media_type=answer.media_type,
                    headers=headers)


async def oip_error_handler(_: Request, exc: OipError) -> Response:
    return JSONResponse(status_code=exc.status.http_status,
                        content={"error": exc.details, "status": json_format.MessageToDict(exc.status)})


async def v1_invalid_input_handler(request: Request, exc: InvalidInput) -> Response:
    """KServe could not decode a v1 body (malformed JSON): on galore's v1 routes, the ExplainResponse TorchServe's
    handler gives; elsewhere KServe's own answer."""
    if not request.url.path.endswith(V1_VERBS):
        return await invalid_input_handler(request, exc)
    model = request.url.path.rsplit("/", 1)[-1].rsplit(":", 1)[0]
    response = pb.ExplainResponse(model=model, status=convert.status(
        InvalidArgument("body", f"malformed JSON ExplainRequest: {exc.reason}")))
    return Response(content=json_format.MessageToJson(response, indent=None), status_code=400, media_type=JSON)


async def v2_inference_error_handler(request: Request, exc: InferenceError) -> Response:
    """KServe 0.21's REST decoder turns binary BYTES tensors into UTF-8 text and fails (500) on encoded images:
    say so as a client error that names the way that works; any other InferenceError stays KServe's."""
    if not (request.url.path.endswith("/infer") and "using UTF-8" in str(exc)):
        return await inference_error_handler(request, exc)
    error = InvalidArgument("inputs", "KServe's REST decoder cannot take binary BYTES tensors that are not UTF-8 "
                                      "(encoded images): send them as base64 strings in JSON, or use OIP gRPC")
    return await oip_error_handler(request, OipError(convert.status(error)))


class GaloreRESTServer(RESTServer):
    def __init__(self, *args, host: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.host = host

    def _add_exception_handlers(self, app):
        super()._add_exception_handlers(app)
        app.add_exception_handler(AnswerError, answer_error_handler)
        app.add_exception_handler(OipError, oip_error_handler)
        app.add_exception_handler(InvalidInput, v1_invalid_input_handler)
        app.add_exception_handler(InferenceError, v2_inference_error_handler)


class GaloreGRPCServer(GRPCServer):
    """KServe's OIP gRPC server on ``host`` (KServe's listens on [::])."""

    def __init__(self, *args, host: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.host = host

    async def start(self, max_workers):
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=(ExceptionToStatusInterceptor(),),
            options=[("grpc.max_send_message_length", self._kwargs["grpc_max_send_message_length"]),
                     ("grpc.max_receive_message_length", self._kwargs["grpc_max_receive_message_length"]),
                     ("grpc.so_reuseport", 0)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._data_plane, self._model_repository_extension), self._server)
        if self._server.add_insecure_port(f"{self.host}:{self._port}") == 0:
            raise OSError(f"cannot listen on {self.host}:{self._port}")
        logger.info("OIP gRPC on %s:%d", self.host, self._port)
        await self._server.start()
        await self._server.wait_for_termination()


class GaloreModelServer(ModelServer):
    """ModelServer with one process and both servers on ``host``; message limits from the archive."""

    def __init__(self, host: str, max_message_bytes: int, **kwargs):
        super().__init__(workers=1, enable_latency_logging=False, **kwargs)
        self.host = host
        self.max_message_bytes = max_message_bytes

    def start(self, models) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = GaloreRESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            host=self.host, access_log_format=self.access_log_format, workers=1, grace_period=self.grace_period,
            event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GaloreGRPCServer(
                self.grpc_port, self.dataplane, self.model_repository_extension, host=self.host,
                kwargs={"grpc_max_send_message_length": self.max_message_bytes,
                        "grpc_max_receive_message_length": self.max_message_bytes},
                grace_period=self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
