"""Persistent gRPC channel to TorchServe: forwards handler calls and reports model readiness."""
from __future__ import annotations

import json
import os
import time

import grpc

from galore_api.torchserve import inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc
from galore_wire.contract import DEADLINE_KEY, RPC_KEY

from .config import ENVELOPE_BYTES, GatewayConfig

# TorchServe's words when its job queue is full (REST answers 503): overload, not a server fault.
QUEUE_FULL_PHRASE = "has no worker to serve inference request"
# TorchServe's words (INTERNAL over gRPC) for a call whose worker died or was stopped while holding it: TorchServe
# starts a new worker, and Explain has no side effects, so the caller may simply retry.
WORKER_LOST_PHRASES = ("Worker died", "Worker scaled down")
# Reconnect quickly after TorchServe comes back (gRPC's default backoff grows to 2 minutes); loopback is cheap.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                     ("grpc.max_reconnect_backoff_ms", 2000)]


class KeyFile:
    """TorchServe's key_file.json (token authorization on): re-read whenever TorchServe rewrites it."""

    def __init__(self, path: str | None):
        self.path = path
        self._stamp: float | None = None
        self._keys: dict[str, str] = {}

    def metadata(self, api: str) -> tuple[tuple[str, str], ...]:
        """``(("authorization", "Bearer <key>"),)`` for api "inference" or "management"; () when auth is off."""
        if self.path is None:
            return ()
        try:
            stamp = os.stat(self.path).st_mtime
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as handle:
                    keys = json.load(handle)
                self._keys = {name: entry.get("key", "") for name, entry in keys.items() if isinstance(entry, dict)}
                self._stamp = stamp
        except (OSError, ValueError):
            return ()
        key = self._keys.get(api)
        return (("authorization", f"Bearer {key}"),) if key else ()


class TorchServeClient:
    """One channel per TorchServe API, opened once and shared by all RPCs."""

    name = "TorchServe"

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.address = config.torchserve_inference
        self.keys = KeyFile(config.torchserve_key_file)
        options = RECONNECT_OPTIONS + [
            ("grpc.max_send_message_length", config.max_request_bytes),
            ("grpc.max_receive_message_length", config.max_response_bytes + ENVELOPE_BYTES),
        ]
        self._inference_channel = grpc.aio.insecure_channel(config.torchserve_inference, options=options)
        self._management_channel = grpc.aio.insecure_channel(config.torchserve_management, options=RECONNECT_OPTIONS)
        self._inference = inference_pb2_grpc.InferenceAPIsServiceStub(self._inference_channel)
        self._management = management_pb2_grpc.ManagementAPIsServiceStub(self._management_channel)

    async def call(self, rpc: str, body: bytes, timeout_s: float) -> bytes:
        """Runs one handler call; returns the handler's bytes unchanged. Raises grpc.aio.AioRpcError.

        The handler gets the deadline too (wall clock: TorchServe runs on the same host or pod), so a call that
        waited in TorchServe's queue past it is dropped before the engine spends work on it."""
        deadline = f"{time.time() + timeout_s:.6f}".encode()
        request = inference_pb2.PredictionsRequest(
            model_name=self.config.model, input={RPC_KEY: rpc.encode(), DEADLINE_KEY: deadline, "body": body})
        response = await self._inference.Predictions(request, timeout=timeout_s,
                                                     metadata=self.keys.metadata("inference"))
        return response.prediction

    @staticmethod
    def unavailable_reason(details: str) -> tuple[str, bool] | None:
        """TorchServe's words for a retryable failure -> (what happened, whether it is overload), else None."""
        if QUEUE_FULL_PHRASE in details:  # TorchServe says so with INTERNAL over gRPC
            return f"TorchServe's job queue is full: {details}", True
        if any(phrase in details for phrase in WORKER_LOST_PHRASES):
            return f"the TorchServe worker holding this call stopped ({details})", False
        return None

    async def model_ready(self, timeout_s: float = 2.0) -> bool:
        """True when TorchServe reports at least one READY worker for the model."""
        try:
            answer = await self._management.DescribeModel(
                management_pb2.DescribeModelRequest(model_name=self.config.model), timeout=timeout_s,
                metadata=self.keys.metadata("management"))
            described = json.loads(answer.msg)
        except (grpc.aio.AioRpcError, ValueError):
            return False
        return any(worker.get("status") == "READY"
                   for model in described for worker in model.get("workers", []))

    async def close(self) -> None:
        await self._inference_channel.close()
        await self._management_channel.close()
