#!/usr/bin/env python3
"""Docker HEALTHCHECK for either role of the galore-serve image (Kubernetes uses its own probes instead).

The role is read from PID 1's command line (tini -g -- galore-entrypoint ROLE ...):
  gateway      -> grpc.health.v1 Check on 127.0.0.1:50051 must answer SERVING
  torchserve   -> GET http://127.0.0.1:8080/ping must answer 200
Exit status 0 = healthy, 1 = unhealthy (with the reason on stdout).
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def container_role() -> str:
    with open("/proc/1/cmdline", "rb") as f:
        argv = [arg.decode(errors="replace") for arg in f.read().split(b"\0") if arg]
    return "gateway" if "gateway" in argv else "torchserve"


def check_torchserve(port: int = 8080) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=TIMEOUT_S) as response:
            return None if response.status == 200 else f"/ping answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"/ping failed: {exc}"


def check_gateway(port: int = 50051) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
