"""``make serve``'s launcher with token auth and the model API on: the gateway reads TorchServe's key file,
REST needs the key, and SIGINT (Ctrl-C) stops TorchServe and the gateway."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import GrpcClient
from galore_supervisor.deployment import Ports

from .conftest import CATS, MODEL, REPO, free_ports


def wait_serving(port: int, launcher: subprocess.Popen) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            assert launcher.poll() is None, "launcher exited"
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            launcher_wait(launcher, 0.5)
    raise AssertionError("never SERVING")


def launcher_wait(launcher: subprocess.Popen, seconds: float) -> None:
    try:
        launcher.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_launcher_with_token_auth_then_ctrl_c(archive_dir, tmp_path, chelsea):
    ports = Ports(*free_ports(7))
    flags = dict(zip(["--grpc-port", "--gateway-metrics-port", "--rest-port", "--management-port", "--metrics-port",
                      "--ts-grpc-port", "--ts-grpc-management-port"], map(str, ports.__dict__.values())))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "galore_supervisor", "--model-store", str(archive_dir), "--run-dir", str(tmp_path),
         "--enable-token-auth", "--enable-model-api", *[x for item in flags.items() for x in item]],
        cwd=REPO, start_new_session=True)
    try:
        wait_serving(ports.grpc, launcher)
        with GrpcClient(f"127.0.0.1:{ports.grpc}", timeout_s=120) as client:
            response = client.explain([chelsea], pb.ExplainOptions(prediction_only=True))
        assert response.images[0].top_classes[0].label in CATS
        url = f"http://127.0.0.1:{ports.rest}/predictions/{MODEL}"
        refused = requests.post(url, data=chelsea, headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert refused.status_code in (400, 401, 403)
        keys = json.loads((tmp_path / "key_file.json").read_text())
        accepted = requests.post(url, data=chelsea, timeout=120, headers={
            "Content-Type": "image/jpeg", "Authorization": f"Bearer {keys['inference']['key']}"})
        assert accepted.status_code == 200 and accepted.json()["images"][0]["topClasses"][0]["label"] in CATS
        torchserve_pid = int((tmp_path / "tmp" / ".model_server.pid").read_text().split()[0])
        assert alive(torchserve_pid)

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=120) == 0
        assert not alive(torchserve_pid)
        for port in (ports.grpc, ports.gateway_metrics, ports.rest, ports.ts_grpc):
            assert not listening(port), port
    finally:  # the launcher must stop its own children, so ask it first
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            launcher_wait(launcher, 60)
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
