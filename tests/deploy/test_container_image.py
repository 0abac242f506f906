"""The Dockerfile passes hadolint, builds from what the repository holds, and agrees with the k8s manifests;
the image's entrypoint and healthcheck work (run here against real local servers; no image is built)."""
from __future__ import annotations

import http.server
import importlib.util
import re
import socket
import subprocess
import threading
import tomllib
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.tools import require_tool

from .manifests import K8S, REPO

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"


def hadolint() -> str:
    return require_tool("hadolint", purpose="lint the Dockerfile")


def build_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M))


def copy_sources() -> list[str]:
    """Context paths of every COPY that reads the build context (not --from=stage)."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


def test_hadolint_passes():
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # latest tag


def test_torch_pins_match_pyproject():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    args = build_args()
    assert f"torch=={args['TORCH_VERSION']}" in dependencies
    assert f"torchvision=={args['TORCHVISION_VERSION']}" in dependencies
    assert args["TORCH_VARIANT"] == "cpu"


def test_every_copied_path_exists_and_is_in_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for source in copy_sources():
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), \
            f"COPY {source}: excluded from the build context by .dockerignore"


def test_image_runs_as_the_user_the_pods_run_as():
    text = DOCKERFILE.read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", text, flags=re.M)
    assert user == [("1000", "1000")]
    deployment = (K8S / "base" / "deployment.yaml").read_text()
    assert "runAsUser: 1000" in deployment and "runAsGroup: 1000" in deployment
    # The container config the image bakes in is the one the ConfigMap carries.
    assert "COPY deploy/k8s/base/torchserve/ /home/model-server/config/" in text


def test_entrypoint_runs_other_commands_as_given():
    result = subprocess.run(["sh", str(ENTRYPOINT), "printf", "%s|", "a b", "c"], capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout) == (0, "a b|c|")


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("galore_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def health_server():
    """A real grpc.health.v1 server on a free loopback port; yields (port, servicer)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(grace=None)


def test_healthcheck_follows_the_gateway_grpc_health(health_server):
    port, servicer = health_server
    check = load_healthcheck()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert check.check_gateway(port) == "gRPC health is NOT_SERVING"
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check.check_gateway(port) is None


class PingHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(self.status if self.path == "/ping" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, expected", [(200, None), (500, "/ping failed: HTTP Error 500")])
def test_healthcheck_follows_torchserve_ping(status, expected):
    handler = type("Handler", (PingHandler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        problem = load_healthcheck().check_torchserve(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert problem == expected or (expected and problem.startswith(expected))


def test_healthcheck_reports_a_closed_port():
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        check = load_healthcheck()
        assert check.check_gateway(port) == "gRPC health failed: UNAVAILABLE"
        assert check.check_torchserve(port).startswith("/ping failed: ")
