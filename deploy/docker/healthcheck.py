#!/usr/bin/env python3
"""Docker HEALTHCHECK for either role of the galore-serve image (Kubernetes uses its own probes instead).

The role is read from PID 1's command line (tini -g -- galore-entrypoint ROLE ...):
  gateway      -> grpc.health.v1 Check on the gateway port (default 50051) must answer SERVING
  torchserve   -> GET /ping on TorchServe's REST port (default 8080) must answer 200
Ports and host come from galore_wire.contract (installed in the image's virtualenv; torch-free).
Exit status 0 = healthy, 1 = unhealthy (with the reason on stdout).
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

from galore_wire.contract import DEFAULT_PORTS, HOST

TIMEOUT_S = 4.0


def container_role() -> str:
    with open("/proc/1/cmdline", "rb") as f:
        argv = [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
    return "gateway" if "gateway" in argv else "torchserve"


def check_torchserve(port: int = DEFAULT_PORTS.rest) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=TIMEOUT_S) as response:
            return None if response.status == 200 else f"/ping answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"/ping failed: {exc}"


def check_gateway(port: int = DEFAULT_PORTS.grpc) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            return f"gRPC health failed: {exc.code().name}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"gRPC health is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def main() -> int:
    problem = check_gateway() if container_role() == "gateway" else check_torchserve()
    if problem:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
