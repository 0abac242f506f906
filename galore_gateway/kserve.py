"""Persistent gRPC channel to the KServe host (galore_kserve): forwards handler calls over the Open Inference
Protocol v2 and reports model readiness.

A call is one OIP ``ModelInfer``: request parameter ``galore-rpc`` (and ``galore-deadline``), input
``galore_request`` holding the caller's bytes; the answer's output ``explain_response`` holds the handler's bytes
unchanged (galore_wire/contract.py OIP_*). Readiness is OIP ``ModelReady``.
"""
from __future__ import annotations

import time

import grpc

from galore_api.kserve import grpc_predict_v2_pb2 as oip
from galore_wire.contract import DEADLINE_KEY, OIP_REQUEST, OIP_RESPONSE, RPC_KEY

from .config import ENVELOPE_BYTES, GatewayConfig
from .torchserve import RECONNECT_OPTIONS

SERVICE_PATH = "/inference.GRPCInferenceService"  # the server's OIP service (our proto subset declares none)
METHODS = {"infer": f"{SERVICE_PATH}/ModelInfer", "ready": f"{SERVICE_PATH}/ModelReady"}


class KServeClient:
    """Same interface as torchserve.TorchServeClient: ``call``, ``model_ready``, ``close``."""

    name = "KServe"

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.address = config.kserve_grpc
        options = RECONNECT_OPTIONS + [
            ("grpc.max_send_message_length", config.max_request_bytes),
            ("grpc.max_receive_message_length", config.max_response_bytes + ENVELOPE_BYTES),
        ]
        self._channel = grpc.aio.insecure_channel(self.address, options=options)
        self._infer = self._channel.unary_unary(
            METHODS["infer"], request_serializer=oip.ModelInferRequest.SerializeToString,
            response_deserializer=oip.ModelInferResponse.FromString)
        self._ready = self._channel.unary_unary(
            METHODS["ready"], request_serializer=oip.ModelReadyRequest.SerializeToString,
            response_deserializer=oip.ModelReadyResponse.FromString)

    async def call(self, rpc: str, body: bytes, timeout_s: float) -> bytes:
        """Runs one handler call; returns the handler's bytes unchanged. Raises grpc.aio.AioRpcError."""
        request = oip.ModelInferRequest(model_name=self.config.model)
        request.parameters[RPC_KEY].string_param = rpc
        request.parameters[DEADLINE_KEY].string_param = f"{time.time() + timeout_s:.6f}"
        tensor = request.inputs.add(name=OIP_REQUEST, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(body)
        response = await self._infer(request, timeout=timeout_s)
        for output in response.outputs:
            if output.name == OIP_RESPONSE and output.contents.bytes_contents:
                return output.contents.bytes_contents[0]
        raise RuntimeError(f"KServe at {self.address} answered without output {OIP_RESPONSE!r}")

    @staticmethod
    def unavailable_reason(details: str) -> tuple[str, bool] | None:
        """Nothing to reclassify: the KServe host answers its full queue inside the galore.v1 answer (status
        UNAVAILABLE, "overloaded"), which the gateway passes on, and it restarts no workers."""
        return None

    async def model_ready(self, timeout_s: float = 2.0) -> bool:
        try:
            answer = await self._ready(oip.ModelReadyRequest(name=self.config.model), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return answer.ready

    async def close(self) -> None:
        await self._channel.close()
