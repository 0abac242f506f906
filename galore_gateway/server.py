"""The grpc.aio server: ``galore.v1.Explainer`` forwarding to the backend (TorchServe or the KServe host, one
module each: torchserve.py, kserve.py), plus health and reflection.

``Explain`` and ``GetModelInfo`` are registered with identity (de)serializers: the caller's request bytes go to
the handler as they are and the handler's response bytes come back as they are. The gateway only reads the
response's first field (the request-level status) to choose the gRPC status code.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from galore_api.v1 import explainer_pb2 as pb
from galore_wire.backpressure import PUSHBACK_KEY, DrainEstimate, jittered
from galore_wire.contract import CODE_TRAILER, FIELD_TRAILER, Call
from galore_wire.status import RETRY_HINT, grpc_code_name, overloaded

from . import metrics
from .config import Backend, GatewayConfig
from .kserve import KServeClient
from .torchserve import TorchServeClient

logger = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Explainer"].full_name  # "galore.v1.Explainer"
TRANSPORT = "grpc"


class ExplainerGateway:
    """Implements Explain / GetModelInfo on raw bytes."""

    def __init__(self, config: GatewayConfig, backend: TorchServeClient | KServeClient):
        self.config = config
        self.backend = backend
        self.images = metrics.images_rate(config.model)
        self.inflight = 0  # Explain calls being forwarded (one event loop: a plain counter is exact)
        self.ready = False  # TorchServe has a READY worker for the model (kept by watch_health)
        self.drain = DrainEstimate()  # answered calls -> the pushback a shed call gets

    async def _shed(self, context: grpc.aio.ServicerContext, message: str, wait_s: float | None = None) -> None:
        """UNAVAILABLE with ``grpc-retry-pushback-ms``: ``wait_s`` (jittered), else the time the calls in flight
        take to drain at the rate answers came back lately (galore_wire.backpressure)."""
        pushback = self.drain.pushback_ms(self.inflight) if wait_s is None else str(round(jittered(wait_s) * 1000))
        context.set_trailing_metadata(((PUSHBACK_KEY, pushback),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.config.default_timeout_s if remaining is None else max(remaining, 0.001)

    async def _forward(self, rpc: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Calls the handler; backend failures become UNAVAILABLE / DEADLINE_EXCEEDED / their own code.

        While health says NOT_SERVING (backend away, starting, or without a ready worker) calls are refused at
        once with UNAVAILABLE instead of waiting in a queue nobody serves."""
        backend = self.backend
        if not self.ready:  # health is polled every health_poll_s: no sooner can a retry find it ready
            await self._shed(context, (
                f"{backend.name} at {backend.address} has no ready worker for model "
                f"{self.config.model} (health NOT_SERVING); {RETRY_HINT}"), self.config.health_poll_s)
        try:
            return await backend.call(rpc, request, self._timeout(context))
        except grpc.aio.AioRpcError as err:
            code, details = err.code(), err.details() or ""
            reason = backend.unavailable_reason(details)
            if reason is not None:  # the backend's own overload or lost-worker words: retryable
                what, overload = reason
                if overload:
                    await self._shed(context, overloaded(what))
                code, message = grpc.StatusCode.UNAVAILABLE, f"{what}; {RETRY_HINT}"
            elif code == grpc.StatusCode.UNAVAILABLE:
                await self._shed(context, f"{backend.name} at {backend.address} is unavailable: {details}; "
                                          f"{RETRY_HINT}", self.config.health_poll_s)
            elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                message = f"deadline exceeded while {backend.name} was explaining"
            else:
                message = f"{backend.name}: {details}"
            await context.abort(code, message)

    async def _observe(self, rpc: str, request: bytes, context, on_answer) -> bytes:
        labels = {"model": self.config.model}
        start = time.perf_counter()
        status = "INTERNAL"
        metrics.INFLIGHT.labels(**labels).inc()
        self.inflight += 1
        try:
            if self.inflight > self.config.max_inflight:
                metrics.SHED_TOTAL.labels(**labels).inc()
                await self._shed(context, overloaded(f"{self.config.max_inflight} calls in flight at the gateway"))
            answer = await self._forward(rpc, request, context)
            self.drain.completed()
            status = on_answer(answer)
            if status != "OK":
                await self._abort_with_status(answer, context)
            return answer
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            status = context.code().name if context.code() is not None else status
            raise
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.labels(**labels).dec()
            metrics.REQUEST_SECONDS.labels(transport=TRANSPORT, **labels).observe(time.perf_counter() - start)
            metrics.REQUESTS_TOTAL.labels(transport=TRANSPORT, status=status, **labels).inc()

    async def _abort_with_status(self, answer: bytes, context) -> None:
        head = pb.ExplainResponseHead.FromString(answer)
        # grpc_code was filled by the service from galore_wire.status.STATUS_TABLE (the one table); the gateway does
        # not import the torch-based core.
        code = grpc.StatusCode[grpc_code_name(head.status.grpc_code)]
        context.set_trailing_metadata(((FIELD_TRAILER, head.status.field), (CODE_TRAILER, head.status.code)))
        message = f"{head.status.field}: {head.status.message}" if head.status.field else head.status.message
        await context.abort(code, message)

    def _explain_status(self, answer: bytes) -> str:
        head = pb.ExplainResponseHead.FromString(answer)
        code = head.status.code or "OK"
        if code == "OK":
            self.images.add(sum(1 for _ in head.images))
        return code

    async def explain(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._observe(Call.EXPLAIN.value, request, context, self._explain_status)

    async def get_model_info(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # Metadata, not traffic: kept out of the request metrics so rates, latencies and error ratios are Explain's.
        return await self._forward(Call.MODEL_INFO.value, request, context)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            Call.EXPLAIN.value: grpc.unary_unary_rpc_method_handler(self.explain),
            Call.MODEL_INFO.value: grpc.unary_unary_rpc_method_handler(self.get_model_info),
        })


async def watch_health(gateway: ExplainerGateway, servicer: health.aio.HealthServicer, poll_s: float) -> None:
    """SERVING (overall and for galore.v1.Explainer) exactly while the backend's model is ready."""
    last = None
    while True:
        ready = gateway.ready = await gateway.backend.model_ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        if status != last:
            for name in ("", SERVICE):
                await servicer.set(name, status)
            logger.info("health: %s", health_pb2.HealthCheckResponse.ServingStatus.Name(status))
            last = status
        await asyncio.sleep(poll_s)


async def serve(config: GatewayConfig, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGTERM/SIGINT, then reports NOT_SERVING and drains for ``shutdown_grace_s``."""
    backend = KServeClient(config) if config.backend == Backend.KSERVE else TorchServeClient(config)
    gateway = ExplainerGateway(config, backend)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", config.caller_max_request_bytes),
        ("grpc.max_send_message_length", config.max_response_bytes),
        ("grpc.so_reuseport", 0),
    ])
    server.add_generic_rpc_handlers((gateway.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    if server.add_insecure_port(config.listen) == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    watcher = asyncio.create_task(watch_health(gateway, health_servicer, config.health_poll_s))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("galore gateway on %s -> %s %s (model %s)", config.listen, backend.name, backend.address,
                config.model)
    if ready is not None:
        ready.set()
    await stop.wait()
    logger.info("shutting down (grace %.1f s)", config.shutdown_grace_s)
    watcher.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.shutdown_grace_s)
    await backend.close()
